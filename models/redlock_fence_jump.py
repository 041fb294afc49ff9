"""Explicit-state check of the two-round quorum fencing proposed for the Redlock backend.

Nodes hold (lock holder, fence counter). Each client makes one acquisition attempt:
round 1 = SET NX on every node, returning the node's counter; with a quorum of grants the
client picks t = max(counters) + 1; round 2 = on every node it was granted, set the counter
to t if the client still holds the lock there and the counter is below t; a quorum of
acks makes the acquisition succeed with token t. Requests may be delivered at any time,
also after the client gave up on them; any node's lock may expire at any time (TTL or
clock jump); optionally a node may restart empty.

Checked: (1) no two successful acquisitions share a token; (2) an acquisition that starts
after another succeeded gets a larger token. Usage: python3 redlock_fence.py [norestart|restarts|seeded|oneround][+incr] [clients]
"+incr": round 1's grant also increments the node's counter and returns the new value
(as dlock-redis's acquire script does), instead of returning it unchanged.
"seeded" restarts a node with its counter seeded from its clock (modelled as above every
token issued so far), which closes the restart hole under a sane-clock assumption.
"""
import sys
from itertools import product

N, C = 3, int(sys.argv[2]) if len(sys.argv) > 2 else 2
INCR = len(sys.argv) > 1 and sys.argv[1].endswith("+incr")
if INCR:
    sys.argv[1] = sys.argv[1][: -len("+incr")]
Q = N // 2 + 1
RESTARTS = len(sys.argv) > 1 and sys.argv[1] in ("restarts", "seeded")
SEEDED = len(sys.argv) > 1 and sys.argv[1] == "seeded"  # a restarted node seeds its counter from its clock, above every earlier token
ONEROUND = len(sys.argv) > 1 and sys.argv[1] == "oneround"  # the naive variant, to show the check can fail
import os
JUMP = int(os.environ.get("JUMP", "2"))  # +incr grant: counter := counter + j, j nondeterministic in 1..JUMP (models max(clock_us, counter+1))
BREAK = int(os.environ.get("BREAK", "0"))  # deliberately broken round 2: 1 = accept counter > t too; 2 = skip holder check; 3 = both
STRICT = os.environ.get("STRICT") == "1"  # original round 2 (counter < t); default is the implementation's counter <= t
RETRY = os.environ.get("RETRY") == "1"  # round-2 requests may be delivered more than once (idempotent retries)

# client state: (phase, r1_pending, grants(frozenset of (node,F)), r2_pending, acks, t, start, done)
# phase: 0 not started, 1 round1, 2 round2, 3 success, 4 failed
def initial():
    nodes = tuple((None, 0) for _ in range(N))
    clients = tuple((0, frozenset(), frozenset(), frozenset(), frozenset(), 0, -1, -1) for _ in range(C))
    return (nodes, clients, 0, 0)  # step counter abstracted to an event order: clock, restarts used

EQ_HITS = [0]  # round-2 deliveries that succeeded with counter == t

def succ(s):
    nodes, clients, clock, restarts = s
    out = []
    for c, (ph, r1p, gr, r2p, acks, t, st, dn) in enumerate(clients):
        def setc(**kw):
            cur = dict(ph=ph, r1p=r1p, gr=gr, r2p=r2p, acks=acks, t=t, st=st, dn=dn)
            cur.update(kw)
            cl = list(clients); cl[c] = (cur['ph'], cur['r1p'], cur['gr'], cur['r2p'], cur['acks'], cur['t'], cur['st'], cur['dn'])
            return tuple(cl)
        if ph == 0:
            out.append((nodes, setc(ph=1, r1p=frozenset(range(N)), st=clock), clock + 1, restarts))
        # deliver a pending round-1 request (possibly after the client moved on)
        for n in r1p:
            h, f = nodes[n]
            nl = list(nodes)
            if h is None:
                bump = ONEROUND or INCR
                for j in (range(1, JUMP + 1) if INCR else [1 if bump else 0]):
                    nl = list(nodes); nl[n] = (c, f + j)
                    g = gr | {(n, f + j)} if ph == 1 else gr
                    out.append((tuple(nl), setc(r1p=r1p - {n}, gr=g), clock, restarts))
            else:
                out.append((tuple(nl), setc(r1p=r1p - {n}, gr=gr), clock, restarts))
        if ph == 1 and len(gr) >= Q and ONEROUND:  # naive: token = max of incremented counters
            out.append((nodes, setc(ph=3, t=max(f for _, f in gr), dn=clock), clock + 1, restarts))
        if ph == 1 and len(gr) >= Q and not ONEROUND:  # close round 1 with a quorum, go to round 2
            tt = max(f for _, f in gr) + 1
            out.append((nodes, setc(ph=2, t=tt, r2p=frozenset(n for n, _ in gr)), clock, restarts))
        if ph in (1, 2):  # give up (timeout / validity gone)
            out.append((nodes, setc(ph=4), clock, restarts))
        for n in r2p:
            h, f = nodes[n]
            nl = list(nodes)
            ok = (h == c or BREAK & 2) and (BREAK & 1 or (f < t if STRICT else f <= t))
            if ok and f == t:
                EQ_HITS[0] += 1
            if ok:
                nl[n] = (h, t)
            a = acks | {n} if (ok and ph == 2) else acks
            out.append((tuple(nl), setc(r2p=r2p if RETRY else r2p - {n}, acks=a), clock, restarts))
            if RETRY:  # or the retried request is finally dropped
                out.append((tuple(nl), setc(r2p=r2p - {n}, acks=a), clock, restarts))
        if ph == 2 and len(acks) >= Q:
            out.append((nodes, setc(ph=3, dn=clock), clock + 1, restarts))
    for n in range(N):
        h, f = nodes[n]
        if h is not None:  # expiry or clock jump at node n
            nl = list(nodes); nl[n] = (None, f)
            out.append((tuple(nl), clients, clock, restarts))
        if RESTARTS and restarts < 1 and (h is not None or f):
            seed = 1 + max([ff for _, ff in nodes] + [cl[5] for cl in clients]) if SEEDED else 0
            nl = list(nodes); nl[n] = (None, seed)
            out.append((tuple(nl), clients, clock, restarts + 1))
    return out

def check(s):
    _, clients, _, _ = s
    wins = [(t, st, dn, c) for c, (ph, _, _, _, _, t, st, dn) in enumerate(clients) if ph == 3]
    for a, b in product(wins, wins):
        if a[3] < b[3] and a[0] == b[0]:
            return f"duplicate token {a[0]} for clients {a[3]} and {b[3]}"
    for a, b in product(wins, wins):
        if a[3] != b[3] and b[1] > a[2] and not b[0] > a[0]:
            return f"client {b[3]} started after client {a[3]} succeeded but got token {b[0]} <= {a[0]}"
    return None

# States are remembered by their 64-bit hash, not whole, so the larger modes fit in memory;
# a collision (about 1e-4 likely at 5e7 states) could only hide states, never invent a violation.
seen, stack, bad = set(), [initial()], None
while stack:
    s = stack.pop()
    h = hash(s)
    if h in seen:
        continue
    seen.add(h)
    v = check(s)
    if v:
        bad = (v, s)
        break
    stack.extend(succ(s))
print(f"N={N} clients={C} mode={sys.argv[1] if len(sys.argv) > 1 else 'norestart'}{'+incr' if INCR else ''}: states={len(seen)}",
      f"JUMP={JUMP} BREAK={BREAK} STRICT={STRICT} RETRY={RETRY} eq_hits={EQ_HITS[0]}",
      "VIOLATION: " + bad[0] if bad else "no violation")
if bad:
    print("state:", bad[1])
