"""python-socketio (the reference Python client) against a real gateway.

Usage: socketio_check.py BASE_URL MASTER_KEY TEAM_KEY FULL_URL
TEAM_KEY may join rooms team-* and hist-* only; FULL_URL is a node (same
master key) already at its realtime.max_connections. Prints "ok: all checks" when
every check passed; any failure raises (non-zero exit).
"""

import queue
import sys

import requests
import socketio

BASE, MASTER, TEAM, FULL = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]


def publish(room, data):
    r = requests.post(
        f"{BASE}/v1/rooms/{room}/messages",
        json={"data": data},
        headers={"Authorization": f"Bearer {MASTER}"},
        timeout=5,
    )
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def client(token, transport):
    sio = socketio.Client(reconnection=False)
    inbox = queue.Queue()
    sio.on("message", lambda data: inbox.put(("message", data)))
    sio.on("subscribed", lambda data: inbox.put(("subscribed", data)))
    sio.on("error", lambda data: inbox.put(("error", data)))
    sio.connect(BASE, auth={"token": token}, transports=[transport], wait_timeout=5)
    return sio, inbox


def next_of(inbox, kind):
    while True:
        got, data = inbox.get(timeout=5)
        if got == kind:
            return data


for transport in ["websocket", "polling"]:
    sio, inbox = client(TEAM, transport)
    ack = sio.call("subscribe", {"topic": "room:team-a"}, timeout=5)
    assert ack["ok"] is True, ack
    assert ack["subscribed"]["topic"] == "room:team-a", ack
    publish("team-a", {"hello": transport})
    message = next_of(inbox, "message")
    assert message == {"topic": "room:team-a", "event": "message", "data": {"hello": transport}}, message
    # A room outside the key's rules is refused, in the ack and as an error event.
    ack = sio.call("subscribe", {"topic": "room:elsewhere"}, timeout=5)
    assert ack["ok"] is False and "may not use room" in ack["error"], ack
    error = next_of(inbox, "error")
    assert error["topic"] == "room:elsewhere", error
    # Without an ack, the subscribed event still comes.
    sio.emit("subscribe", {"topic": "room:team-b"})
    assert next_of(inbox, "subscribed")["topic"] == "room:team-b"
    ack = sio.call("unsubscribe", {"topic": "room:team-b"}, timeout=5)
    assert ack["ok"] is True and ack["was_subscribed"] is True, ack
    sio.disconnect()
    print(f"ok: {transport}")

def refusal(url, token):
    """The connect_error message of a connection that must be refused."""
    sio = socketio.Client(reconnection=False)
    reasons = []
    sio.on("connect_error", lambda data: reasons.append(data))
    try:
        sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        pass
    else:
        raise AssertionError(f"{url} admitted a connection with token {token!r}")
    assert reasons, "no connect_error"
    return reasons[0]["message"]


# A bad key is refused with connect_error, which says why.
for token in ["fg-not-a-key", ""]:
    message = refusal(BASE, token)
    assert "api_key" in message, message
print("ok: refused")

# A full node refuses with the reason and when to retry.
message = refusal(FULL, MASTER)
assert "node_full" in message and "retry after" in message, message
print("ok: node full")

# Recovery from the room's history.
first = publish("hist-s", 1)
publish("hist-s", 2)
publish("hist-s", 3)
sio, inbox = client(TEAM, "websocket")
ack = sio.call(
    "subscribe",
    {"topic": "room:hist-s", "since": {"offset": first["offset"], "epoch": first["epoch"]}},
    timeout=5,
)
assert ack["subscribed"]["recovered"] is True, ack
replayed = [next_of(inbox, "message")["data"] for _ in range(2)]
assert replayed == [2, 3], replayed
sio.disconnect()
print("ok: recovery")
print("ok: all checks")
