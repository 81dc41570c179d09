#!/usr/bin/env python3
"""Listeners and probes for the wire test (tests/integration/wire.rs), run inside its namespaces.

  wire.py listen PORT...   in "net": a TCP and a UDP listener on every PORT, IPv4 and IPv6, on
                           every local address. Prints "ready" once all are bound; exits when
                           its standard input closes.
  wire.py probe            in "client": reads probes, one a line, and prints one verdict a line:
                           "pass", "drop" or "error <why>".

Probes:
  tcp ADDR PORT            a SYN through a raw socket first: EPERM from sendto() is the kernel
                           saying the firewall dropped it ("drop"). Otherwise a real connection
                           must reach the listener on ADDR PORT and get its echo ("pass").
                           (A connect() whose SYN is dropped in OUTPUT just retries until its
                           timeout; only the raw send reports the drop at once.)
  udp ADDR PORT            a datagram from a connected socket: EPERM from send() is "drop";
                           otherwise the echo of the listener on ADDR PORT must come back.
  from SRC tcp ADDR PORT   ingress: a connection from the local address SRC to ADDR PORT, whose
                           firewall ends its input chain with a TCP reset reject. Every probed
                           port has a listener (a control pass without firewall proves it), so
                           a refused connection is that reject: "drop"; the listener's echo is
                           "pass"; a timeout or anything else is an error.
  get|connect HOST PORT ADDR
                           curl through the proxy in $WIRE_PROXY, GET (absolute URI) or CONNECT
                           (then a GET inside the tunnel) to http://HOST:PORT/: the listener on
                           ADDR PORT answering 200 is "pass", the proxy's 403 is "drop". One
                           curl run takes all the probes of a method, one transfer each.

  wire.py wait-port ADDR PORT PID
                           returns once ADDR PORT accepts connections (a proxy starting);
                           fails at once if process PID (that proxy) has ended.

  wire.py resolve SERVER NAME...
                           asks the DNS server on SERVER port 53 (UDP) for the A and AAAA
                           records of every NAME, one query each, and prints one line a name:
                           "NAME ADDR...". Retries while the server is not answering yet.

Every wait is bounded by TIMEOUT seconds; no verdict is ever taken from how long something took.
"""

import errno
import ipaddress
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time

TIMEOUT = 10.0
IP_PKTINFO = 8  # Linux; the socket module does not always export it.
HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ")


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------
# listen


def tcp_answer(conn):
    """Echoes one line as "wire LOCAL_ADDR LOCAL_PORT LINE", or answers an HTTP request with a
    200 whose body is "wire LOCAL_ADDR LOCAL_PORT" (what a proxy forwards)."""
    try:
        conn.settimeout(TIMEOUT)
        local = conn.getsockname()
        me = f"wire {ipaddress.ip_address(local[0].split('%')[0])} {local[1]}"
        data = b""
        while b"\n" not in data and len(data) < 4096:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        if data.startswith(HTTP_METHODS):
            while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            body = (me + "\n").encode()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            conn.sendall(head.encode() + body)
        else:
            line = data.split(b"\n", 1)[0].decode("ascii", "replace")
            conn.sendall(f"{me} {line}\n".encode())
    except OSError:
        pass
    finally:
        conn.close()


def udp_answer(sock, family):
    """Echoes one datagram from the address it was sent to (the listener is bound to every
    address, so the reply's source is set from the packet's own destination)."""
    level = socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6
    kind = IP_PKTINFO if family == socket.AF_INET else socket.IPV6_PKTINFO
    data, ancillary, _flags, peer = sock.recvmsg(4096, socket.CMSG_SPACE(64))
    dst = None
    for cmsg_level, cmsg_type, cmsg_data in ancillary:
        if cmsg_level == level and cmsg_type == kind:
            if family == socket.AF_INET:
                dst = cmsg_data[8:12]
            else:
                dst = cmsg_data[0:16]
    if dst is None:
        return
    addr = ipaddress.ip_address(dst)
    port = sock.getsockname()[1]
    reply = f"wire {addr} {port} {data.decode('ascii', 'replace')}".encode()
    if family == socket.AF_INET:
        info = struct.pack("=I4s4s", 0, dst, b"\0" * 4)
    else:
        info = struct.pack("=16sI", dst, 0)
    sock.sendmsg([reply], [(level, kind, info)], 0, peer)


def listen(ports):
    sel = selectors.DefaultSelector()
    for port in ports:
        for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            t = socket.socket(family, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            u = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                u.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            t.bind((any_addr, port))
            t.listen(128)
            u.bind((any_addr, port))
            sel.register(t, selectors.EVENT_READ, ("tcp", family))
            sel.register(u, selectors.EVENT_READ, ("udp", family))

    def stop_when_stdin_closes():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    say("ready")
    while True:
        for key, _ in sel.select():
            proto, family = key.data
            try:
                if proto == "tcp":
                    conn, _ = key.fileobj.accept()
                    threading.Thread(target=tcp_answer, args=(conn,), daemon=True).start()
                else:
                    udp_answer(key.fileobj, family)
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------
# probe


def family_of(addr):
    return socket.AF_INET if ipaddress.ip_address(addr).version == 4 else socket.AF_INET6


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def raw_syn(addr, port):
    """Sends one TCP SYN to ADDR PORT through a raw socket; returns the errno of a refused send
    or None. The packet crosses the same OUTPUT hook as a connect()'s SYN."""
    family = family_of(addr)
    # The source address the kernel will pick, for the checksum's pseudo-header.
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        u.connect((addr, port))
        src = u.getsockname()[0]
    sport = random.randint(20000, 60000)
    seq = random.getrandbits(32)
    header = struct.pack("!HHIIBBHHH", sport, port, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(addr).packed
    if family == socket.AF_INET:
        pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header))
    else:
        pseudo = s + d + struct.pack("!I3xB", len(header), socket.IPPROTO_TCP)
    header = header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP) as r:
        try:
            r.sendto(header, (addr, 0))
        except PermissionError as e:
            return e.errno
    return None


def expect_echo(reply, addr, port, payload):
    want = f"wire {ipaddress.ip_address(addr)} {port} {payload}"
    got = reply.decode("ascii", "replace").rstrip("\n")
    if got == want:
        return "pass"
    return f"error answered {got!r}, not {want!r}"


def probe_tcp(addr, port):
    if raw_syn(addr, port) is not None:
        return "drop"
    nonce = f"probe-{random.getrandbits(48):x}"
    try:
        with socket.create_connection((addr, port), timeout=TIMEOUT) as s:
            s.sendall(f"{nonce}\n".encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return f"error the SYN was sent but connecting failed: {e}"
    return expect_echo(data, addr, port, nonce)


def probe_udp(addr, port):
    nonce = f"probe-{random.getrandbits(48):x}"
    with socket.socket(family_of(addr), socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((addr, port))
        try:
            s.send(nonce.encode())
        except PermissionError:
            return "drop"
        try:
            data = s.recv(4096)
        except OSError as e:
            return f"error sent, but no echo: {e}"
    return expect_echo(data, addr, port, nonce)


MARK = "@@wire-transfer"


def probe_proxy(method, probes):
    """One curl run for all PROBES [(host, port, addr)] of METHOD, sequential transfers, each
    followed by a marker line with its CONNECT and HTTP status codes. Returns a verdict each."""
    proxy = os.environ["WIRE_PROXY"]
    cmd = ["curl", "-sS", "-g", "--noproxy", "", "-x", proxy, "--max-time", str(TIMEOUT)]
    if method == "connect":
        cmd.append("-p")
    cmd += ["-w", f"\n{MARK} %{{http_connect}} %{{http_code}}\n", "--config", "-"]
    urls = "".join(
        f'url = "http://{f"[{h}]" if ":" in h else h}:{p}/"\n' for h, p, _ in probes
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    out = subprocess.run(
        cmd, input=urls.encode(), capture_output=True, env=env,
        timeout=(TIMEOUT + 1) * len(probes) + 10,
    )
    chunks = out.stdout.decode("utf-8", "replace").split(f"\n{MARK} ")
    bodies, codes = [chunks[0]], []
    for chunk in chunks[1:]:
        code_line, _, rest = chunk.partition("\n")
        codes.append(code_line)
        bodies.append(rest)
    if len(codes) != len(probes):
        why = out.stderr.decode("utf-8", "replace").strip()
        return [f"error curl gave {len(codes)} results for {len(probes)} URLs: {why!r}"] * len(probes)
    verdicts = []
    for (host, port, addr), body, code_line in zip(probes, bodies, codes):
        connect_code, _, code = code_line.partition(" ")
        want = f"wire {ipaddress.ip_address(addr)} {port}"
        status = connect_code if method == "connect" else code
        if status == "403":
            verdicts.append("drop")
        elif status == "200" and code == "200" and body.strip() == want:
            verdicts.append("pass")
        else:
            verdicts.append(
                f"error {host} {port}: CONNECT {connect_code}, HTTP {code}, body {body[:80]!r}"
            )
    return verdicts


def probe_from(src, addr, port):
    nonce = f"probe-{random.getrandbits(48):x}"
    try:
        with socket.socket(family_of(addr), socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT)
            s.bind((src, 0))
            s.connect((addr, port))
            s.sendall(f"{nonce}\n".encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        if e.errno == errno.ECONNREFUSED:
            return "drop"
        return f"error connecting from {src}: {e}"
    return expect_echo(data, addr, port, nonce)


def one(line):
    words = line.split()
    try:
        if words[0] == "from" and words[2] == "tcp":
            return probe_from(words[1], words[3], int(words[4]))
        if words[0] == "tcp":
            return probe_tcp(words[1], int(words[2]))
        if words[0] == "udp":
            return probe_udp(words[1], int(words[2]))
        return f"error unknown probe {line!r}"
    except Exception as e:  # a verdict for every line, whatever went wrong
        return f"error {type(e).__name__}: {e}"


def probe():
    lines = [l for l in sys.stdin.read().splitlines() if l.strip()]
    verdicts = [None] * len(lines)
    # Proxy probes: one curl run a method, many transfers each.
    for method in ("get", "connect"):
        mine = [i for i, l in enumerate(lines) if l.split()[0] == method]
        if mine:
            probes = [(w[1], int(w[2]), w[3]) for w in (lines[i].split() for i in mine)]
            for i, verdict in zip(mine, probe_proxy(method, probes)):
                verdicts[i] = verdict
    for i, line in enumerate(lines):
        if verdicts[i] is None:
            verdicts[i] = one(line)
        say(verdicts[i])


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_port(addr, port, pid):
    """Returns once ADDR PORT accepts a TCP connection; fails when process PID (the server)
    has ended, or after TIMEOUT * 3 seconds."""
    deadline = time.monotonic() + TIMEOUT * 3
    while True:
        try:
            socket.create_connection((addr, port), timeout=TIMEOUT).close()
            return
        except OSError as e:
            if not alive(pid):
                sys.exit(f"{addr} {port} accepts no connection, and process {pid} has ended")
            if time.monotonic() > deadline:
                sys.exit(f"{addr} {port} accepts no connection: {e}")
            time.sleep(0.05)


def dns_query(server, name, qtype):
    """The addresses of one answer (RRs of QTYPE only), from a minimal RFC 1035 query."""
    qid = random.getrandbits(16)
    question = b"".join(bytes([len(l)]) + l.encode("ascii") for l in name.split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
    deadline = time.monotonic() + TIMEOUT
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            try:
                s.sendto(packet, (server, 53))
                reply = s.recv(4096)
            except OSError as e:
                reply, why = None, e
        if reply is not None and reply[:2] == packet[:2]:
            rcode = reply[3] & 0x0F
            if rcode == 0:
                break
            why = f"rcode {rcode}"
        if time.monotonic() > deadline:
            sys.exit(f"no DNS answer for {name} from {server}: {why}")
        time.sleep(0.05)
    _id, _flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    at = 12

    def skip_name(at):
        while True:
            n = reply[at]
            if n & 0xC0 == 0xC0:
                return at + 2
            if n == 0:
                return at + 1
            at += n + 1

    for _ in range(qd):
        at = skip_name(at) + 4
    out = []
    for _ in range(an):
        at = skip_name(at)
        rtype, _cls, _ttl, size = struct.unpack("!HHIH", reply[at:at + 10])
        at += 10
        if rtype == qtype:
            out.append(str(ipaddress.ip_address(reply[at:at + size])))
        at += size
    return out


def resolve(server, names):
    for name in names:
        say(name, *(dns_query(server, name, 1) + dns_query(server, name, 28)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["wait-port"]:
        wait_port(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["listen"]:
        listen([int(p) for p in sys.argv[2:]])
    elif sys.argv[1:2] == ["resolve"]:
        resolve(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["probe"]:
        probe()
    else:
        sys.exit(__doc__)
