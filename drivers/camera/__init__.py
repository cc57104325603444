"""Camera face biometrics at the gate (driver kind ``camera.face``).

Capture, the face pipeline and the decision run in a worker process
(``worker.py``) because dlib holds the GIL; the driver thread in the daemon
only feeds it commands and turns its results into events. The gallery is an
encrypted SQLite file in ``state_dir/biometrics`` shared by the worker, the
gallery sync component and the ``edge biometrics`` CLI.
"""
