"""Both turnstile codecs: round trips for every message (hypothesis) and a noisy-line fuzz."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.turnstile import codec_bcc, codec_rs485
from drivers.turnstile import messages as m
from drivers.turnstile.codecs import CODECS, get_codec

u8, u16, u32 = (st.integers(0, 2**n - 1) for n in (8, 16, 32))
direction = st.sampled_from(["in", "out"])

# One strategy per message type: every type the codecs carry appears here.
BODIES = {
    m.Poll: st.builds(m.Poll, u16),
    m.GetStatus: st.just(m.GetStatus()),
    m.Grant: st.builds(m.Grant, direction, u8, u8),
    m.Deny: st.just(m.Deny()),
    m.Lock: st.just(m.Lock()),
    m.Unlock: st.just(m.Unlock()),
    m.Lockdown: st.just(m.Lockdown()),
    m.Release: st.just(m.Release()),
    m.SetTime: st.builds(m.SetTime, u32),
    m.ReadCounters: st.just(m.ReadCounters()),
    m.Ack: st.builds(m.Ack, u8),
    m.Nak: st.builds(m.Nak, u8, st.sampled_from(list(m.NakReason))),
    m.Status: st.builds(m.Status, st.sampled_from(list(m.Mode)), st.booleans(), st.booleans(),
                        st.booleans(), st.booleans(), u8),
    m.Counters: st.builds(m.Counters, u32, u32),
    m.DeviceEvent: st.builds(m.DeviceEvent, u16, st.sampled_from(list(m.EventKind)),
                             st.sampled_from([None, "in", "out"]), u8, u32, u32),
}


def bus_messages():
    return st.one_of([s for cls, s in BODIES.items()])


def p2p_messages():
    """What bcc-p2p carries: no poll, and ACK/NAK are bare bytes without code or reason."""
    framed = [s for cls, s in BODIES.items() if cls not in (m.Poll, m.Ack, m.Nak)]
    return st.one_of(*framed, st.just(m.Ack()), st.just(m.Nak()))


def test_every_message_type_has_a_strategy():
    assert set(BODIES) == set(m.REQUESTS + m.REPLIES) - {m.EventAck}


@given(bus_messages(), st.integers(1, 32))
def test_rs485_round_trip(message, address):
    frame = codec_rs485.encode(message, address)
    assert codec_rs485.Decoder().feed(frame) == [m.Received(address, message)]
    inner = frame[1:-1]
    assert 0x02 not in inner and 0x03 not in inner  # stuffing keeps control bytes out


@given(p2p_messages())
def test_bcc_round_trip(message):
    assert codec_bcc.Decoder().feed(codec_bcc.encode(message)) == [m.Received(1, message)]


def test_bcc_event_ack_is_one_ack_byte():
    assert codec_bcc.encode(m.EventAck()) == b"\x06"
    with pytest.raises(ValueError, match="no poll"):
        codec_bcc.encode(m.Poll(1))


@given(bus_messages(), st.integers(1, 32), st.binary(max_size=300), st.integers(1, 100))
def test_rs485_decodes_frame_after_any_noise_in_any_chunking(message, address, noise, chunk):
    # Any bytes at all before it (including STX and an overlong frame start): STX resyncs.
    frame = codec_rs485.encode(message, address)
    stream = noise + frame
    dec = codec_rs485.Decoder()
    got = []
    for i in range(0, len(stream), chunk):
        got += dec.feed(stream[i:i + chunk])
    assert got[-1:] == [m.Received(address, message)]


_NO_CONTROL = st.binary(min_size=70, max_size=200).map(lambda b: b.replace(b"\x02", b"").replace(b"\x03", b""))


@given(bus_messages(), _NO_CONTROL, st.integers(1, 300))
def test_rs485_overlong_frame_start_does_not_swallow_the_next_frame(message, filler, chunk):
    # An STX whose ETX never came, then a long run of ordinary bytes, then a real frame.
    frame = codec_rs485.encode(message, 5)
    stream = b"\x02" + filler + frame
    dec = codec_rs485.Decoder()
    got = []
    for i in range(0, len(stream), chunk):
        got += dec.feed(stream[i:i + chunk])
    assert got == [m.Received(5, message)]


@given(p2p_messages(), st.binary(max_size=80), st.integers(1, 16))
def test_bcc_decodes_frame_after_noise_once_the_line_is_idle(message, noise, chunk):
    # A false STX in the noise can claim the real frame's bytes as its body until the line goes
    # quiet; idle() then rescans. Noise here may hold STX bytes; only a false header whose 8-bit
    # BCC *and* body layout both happen to check out could hide the frame (see the fuzz below).
    frame = codec_bcc.encode(message)
    stream = noise + frame
    dec = codec_bcc.Decoder()
    got = []
    for i in range(0, len(stream), chunk):
        got += dec.feed(stream[i:i + chunk])
    got += dec.idle()
    assert m.Received(1, message) in got


def test_wire_examples_match_the_protocol_docs():
    # The worked examples of docs/protocols/*.md, byte for byte.
    assert codec_rs485.encode(m.Grant("in", 1, 10), 3).hex(" ") == "02 10 23 30 10 23 01 01 0a 90 3f 03"
    assert codec_bcc.encode(m.Grant("in", 1, 10)).hex(" ") == "02 04 00 30 01 01 0a 3c"
    event = m.DeviceEvent(8, m.EventKind.PASSAGE, "out", 0, 1234, 1_800_000_000)
    assert codec_rs485.encode(event, 3).hex(" ") == (
        "02 10 23 60 0d 08 00 01 10 22 00 d2 04 00 00 00 d2 49 6b 37 99 03")
    assert codec_rs485.encode(m.Nak(0x34, m.NakReason.EMERGENCY_ACTIVE), 3).hex(" ") == (
        "02 10 23 42 10 22 34 10 23 83 79 03")
    assert codec_bcc.encode(event).hex(" ") == "02 0e 00 60 08 00 01 02 00 d2 04 00 00 00 d2 49 6b 41"
    assert codec_bcc.encode(m.Counters(1234, 56)).hex(" ") == "02 09 00 51 d2 04 00 00 38 00 00 00 b4"
    assert codec_rs485.crc16_modbus(b"123456789") == 0x4B37


def test_unknown_code_with_good_checksum_is_counted_and_skipped():
    bogus = bytes((1, 0x7F, 0))
    crc = codec_rs485.crc16_modbus(bogus)
    good = codec_rs485.encode(m.Deny(), 1)
    dec = codec_rs485.Decoder()
    assert dec.feed(b"\x02" + bogus + bytes((crc & 0xFF, crc >> 8)) + b"\x03" + good) == [
        m.Received(1, m.Deny())]
    assert dec.stats.unknown == 1


# --- fuzz ---------------------------------------------------------------------------------

def _random_message(rng: random.Random, codec: str):
    def dirn():
        return rng.choice(["in", "out"])
    makers = [
        lambda: m.GetStatus(), lambda: m.Deny(), lambda: m.Lock(), lambda: m.Unlock(),
        lambda: m.Lockdown(), lambda: m.Release(), lambda: m.ReadCounters(),
        lambda: m.Grant(dirn(), rng.randrange(256), rng.randrange(256)),
        lambda: m.SetTime(rng.randrange(2**32)),
        lambda: m.Status(rng.choice(list(m.Mode)), *(rng.random() < .5 for _ in range(4)), rng.randrange(256)),
        lambda: m.Counters(rng.randrange(2**32), rng.randrange(2**32)),
        lambda: m.DeviceEvent(rng.randrange(2**16), rng.choice(list(m.EventKind)),
                              rng.choice([None, "in", "out"]), rng.randrange(256),
                              rng.randrange(2**32), rng.randrange(2**32)),
    ]
    if codec == "rs485-bus":
        makers += [lambda: m.Poll(rng.randrange(2**16)), lambda: m.Ack(rng.randrange(256)),
                   lambda: m.Nak(rng.randrange(256), rng.choice(list(m.NakReason)))]
    else:
        makers += [lambda: m.Ack(), lambda: m.Nak()]
    return rng.choice(makers)()


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    how = rng.randrange(5)
    pos = rng.randrange(len(b))
    if how == 0:
        b[pos] ^= rng.randrange(1, 256)
    elif how == 1:
        del b[pos]
    elif how == 2:
        b.insert(pos, rng.randrange(256))
    elif how == 3:
        del b[max(1, pos):]          # cut short
    else:
        b[pos:pos] = b[: rng.randrange(1, len(b) + 1)]  # a repeated prefix
    return bytes(b)


def _random_frame_unknown_code(rng: random.Random, codec: str) -> bytes:
    """A frame with a valid checksum around a code/body nobody knows."""
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(6)))
    code = rng.choice([0x00, 0x7E, 0x99, 0xFF])
    if codec == "rs485-bus":
        inner = bytes((rng.randrange(1, 33), code, len(body))) + body
        crc = codec_rs485.crc16_modbus(inner)
        return b"\x02" + codec_rs485._stuff(inner + bytes((crc & 0xFF, crc >> 8))) + b"\x03"
    head = b"\x02" + (1 + len(body)).to_bytes(2, "little") + bytes((code,)) + body
    return head + bytes((codec_bcc._bcc(head),))


@pytest.mark.parametrize("codec_name", sorted(CODECS))
def test_fuzz_100k_frames_with_noise(codec_name):
    """>=100 000 frames (intact, mutated, random) mixed with noise, fed in random chunks.

    No exception, bounded time, and every intact frame comes out, in order. For bcc-p2p a
    mutated frame is followed by the line going idle: a frame cut short means its sender
    stopped, and only silence tells a length-prefixed decoder with an 8-bit check that the
    frame will not complete (rs485-bus needs no such help: STX always restarts a frame).
    """
    codec = get_codec(codec_name)
    rng = random.Random(4)  # fixed: a failure is reproducible
    # A pool of random messages (all types, random fields) keeps generation cheap; every use
    # of a frame is independently mutated or not, and lands among different noise.
    pool = []
    for _ in range(20_000):
        address = rng.randrange(1, 33) if codec.polled else 1
        message = _random_message(rng, codec_name)
        pool.append((m.Received(address, message), codec.encode(message, address)))
    segments, expected, pending = [], [], []
    frames = 0
    while frames < 100_000:
        roll = rng.random()
        if roll < 0.15:
            pending.append(rng.randbytes(rng.randrange(1, 24)))
            continue
        frames += 1
        received, frame = rng.choice(pool)
        if roll < 0.65:
            pending.append(frame)
            expected.append(received)
        elif roll < 0.95:
            pending.append(_mutate(rng, frame))
            if not codec.polled:
                segments.append(b"".join(pending))  # then the line goes quiet
                pending = []
        else:
            pending.append(_random_frame_unknown_code(rng, codec_name))
    segments.append(b"".join(pending))

    dec, got = codec.decoder(), []
    started = time.monotonic()
    for segment in segments:
        pos = 0
        while pos < len(segment):
            step = rng.choice((1, 2, 5, 13, 64, 300, 4096))
            got += dec.feed(segment[pos:pos + step])
            pos += step
        got += dec.idle()
    elapsed = time.monotonic() - started

    it = iter(got)
    missing = [e for e in expected if not any(g == e for g in it)]
    assert not missing, f"{len(missing)} intact frames lost, first {missing[0]}"
    stats = dec.stats
    assert len(expected) > 45_000 and stats.garbage_bytes > 100_000
    assert stats.bad_checksum + stats.malformed > 10_000 and stats.unknown > 1000
    assert elapsed < 20, f"decoding took {elapsed:.1f}s"
