"""edge._sockets.bind_unix: the one way the daemon's sockets are put in place."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from edge._sockets import bind_unix


def test_the_socket_appears_with_its_mode_and_group_already_set(tmp_path):
    final = tmp_path / "api.sock"
    seen = []

    def prepare(tmp):
        st = tmp.stat()
        seen.append((tmp.parent.stat().st_mode & 0o777, stat.S_IMODE(st.st_mode), final.exists()))
        os.chown(tmp, -1, os.getgid())

    sock = bind_unix(final, 0o660, prepare)
    try:
        sock.listen(1)
        # Prepared inside a folder only the daemon can enter, before the final name exists.
        assert seen == [(0o700, 0o660, False)]
        assert stat.S_ISSOCK(final.stat().st_mode) and stat.S_IMODE(final.stat().st_mode) == 0o660
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(final))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["api.sock"]  # the private folder is gone
    finally:
        sock.close()


def test_a_link_at_the_final_name_is_replaced_never_followed(tmp_path):
    target = tmp_path / "secret"
    target.write_text("key")
    target.chmod(0o600)
    final = tmp_path / "control.sock"
    final.symlink_to(target)  # planted by an account that can write the folder
    sock = bind_unix(final, 0o660)
    sock.close()
    assert not final.is_symlink() and stat.S_ISSOCK(final.lstat().st_mode)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "key"


def test_a_failing_prepare_leaves_nothing_behind(tmp_path):
    def refuse(_tmp):
        raise PermissionError("no such group here")

    with pytest.raises(PermissionError):
        bind_unix(tmp_path / "api.sock", 0o660, refuse)
    assert list(tmp_path.iterdir()) == []
