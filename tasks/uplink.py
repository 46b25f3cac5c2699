"""A network of its own for each sandboxed worker of a run with `--allow-network`.

Without the network a worker's sandbox has a network namespace with loopback only. With it, the
sandbox keeps that namespace of its own and gets an uplink: `slirp4netns` (a user-mode TCP/IP stack,
Debian package `slirp4netns`; the fence below needs `ip` (iproute2), `nsenter` and `prlimit` (util-linux)) attached to the namespace from outside, which gives it a `tap0`
device (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3; the sandbox's `/etc/resolv.conf` names
`UPLINK_DNS`) and carries its connections out as connections of this machine. So:

- a task reaches the internet and the machines of this one's networks;
- it does not reach this machine's loopback (`--disable-host-loopback`): no local service, no
  `kimi-agent serve`, no other worker's browser debugging port on 127.0.0.1;
- DNS goes to 10.0.2.3:53, which slirp4netns forwards to this machine's first nameserver, a local
  resolver on loopback included (systemd-resolved, dnsmasq): the one loopback service a task reaches,
  for DNS only; every other port of 10.0.2.2 and 10.0.2.3 is unreachable;
- it does not reach this machine by its other addresses either (a service bound to 0.0.0.0), nor a
  cloud's instance-metadata service (169.254.169.254: credentials): before the uplink is attached,
  the sandbox's routing table gets a `prohibit` route for each of `fenced_prefixes()` (this machine's
  IPv4 addresses then, and `FENCED_PREFIXES`; each task gets a fresh uplink, fenced anew), which a task, without capabilities,
  cannot remove; a connection there fails at once ("Permission denied");
- loopback and abstract unix sockets are per namespace, so no worker reaches another worker's
  browser or display (Xvfb's `@/tmp/.X11-unix/X<n>`), which a shared network (`bwrap --share-net`)
  would allow.

slirp4netns itself runs confined (`--enable-sandbox`, `--enable-seccomp`), in the worker's cgroup
where there is one (what it spends on a task's traffic counts against the worker's limits), and
ends when the runner closes its exit pipe (`Uplink.close`) or dies. Attaching does not need root: the
sandbox's network namespace belongs to a user namespace that bwrap made as the runner's user, in which
that user is root (bwrap maps it to 0); slirp4netns and the fence run there (`nsenter --user`), with
rights over the sandbox's namespaces only. It needs `/dev/net/tun` open to that user (udev makes it
0666 on most distributions; some containers keep it root's). Where an
uplink cannot be made (`uplink_problem` says why) the runner falls back to the shared network and says so.

    pid = child_pid(info_fd, timeout_s=10)       # from `bwrap --info-fd`, at once
    ...                                          # once the sandbox runs its command (not before:
    uplink = Uplink.attach(pid, log=logfile)     # bwrap sets up its loopback); ready on return
    ...
    uplink.close()
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from kimi_agent.errors import EnvironmentStartError

UPLINK_DNS = "10.0.2.3"  # slirp4netns's built-in DNS forwarder
UPLINK_MTU = 65520
READY_TIMEOUT_S = 10.0  # slirp4netns is ready in ~10 ms here
MAX_INFO_BYTES = 4096  # bwrap's --info-fd JSON is about 60 bytes
UPLINK_NET = ipaddress.IPv4Network("10.0.2.0/24")  # slirp4netns's own network (gateway .2, DNS .3, sandbox .100)
# besides this machine's own addresses, what no sandbox reaches: loopback and "this network" (the
# sandbox's own loopback routes come first), link-local, where clouds serve instance metadata and
# credentials (169.254.169.254), and Alibaba Cloud's metadata address. A socket bound to tap0
# (SO_BINDTODEVICE) is not refused by these routes: the kernel then takes a prohibited destination as
# one on tap0's link instead of sending it to the gateway (which would carry 127.0.0.1 to this
# machine's), and on the link nothing answers: slirp4netns answers ARP only for its own network's
# addresses. An uplink that answered ARP for every address would need another barrier.
FENCED_PREFIXES = ("127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "100.100.100.200/32")
# slirp4netns holds a socket of this machine per connection or UDP flow of the sandbox (UDP ones for
# about 4 minutes): its own limit keeps a task from using up this machine's ports and descriptors
UPLINK_MAX_FILES = 1024
FENCE_TIMEOUT_S = 10.0  # `ip` takes a few ms
NS_GET_USERNS = 0xB701  # ioctl on a namespace's descriptor: a descriptor of the user namespace that owns it


def slirp4netns_exe() -> str:
    """The slirp4netns program: `$KIMI_AGENT_SLIRP4NETNS` or `slirp4netns` on PATH."""
    return os.environ.get("KIMI_AGENT_SLIRP4NETNS") or "slirp4netns"


@functools.cache
def uplink_problem() -> str | None:
    """None when each sandboxed worker can get a network of its own here; otherwise why not, in one
    sentence. Past the quick checks it attaches an uplink to a throwaway sandbox (about 0.1 s, once
    per process), so that a machine where that cannot work (no `/dev/net/tun`, a seccomp or LSM
    policy) is known before any worker starts."""
    if shutil.which(slirp4netns_exe()) is None:
        return "slirp4netns is not installed (Debian: apt-get install slirp4netns)"
    for tool, package in (("ip", "iproute2"), ("nsenter", "util-linux"), ("prlimit", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: apt-get install {package}); it fences this machine off"
    from kimi_agent.tasks.sandbox import SandboxPlan, bwrap_argv, probe

    if (why := probe()) is not None:
        return f"there is no sandbox to attach it to: {why}"
    with tempfile.TemporaryDirectory(prefix="kimi-uplink-probe-") as home, \
            tempfile.TemporaryFile() as said:  # what slirp4netns says, for the reason
        info_r, info_w = os.pipe()
        argv = [*bwrap_argv(SandboxPlan(home=Path(home), network="uplink", info_fd=info_w)),
                "/bin/sh", "-c", "echo up; read line"]  # says when bwrap's own setup is done
        try:
            proc = subprocess.Popen(argv, pass_fds=(info_w,), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
        except OSError as e:
            os.close(info_r)
            return f"bwrap could not start: {e}"
        finally:
            os.close(info_w)
        try:
            pid = child_pid(info_r)
            assert proc.stdout is not None
            if not select.select([proc.stdout], [], [], READY_TIMEOUT_S)[0] or proc.stdout.readline() != b"up\n":
                return f"a probe sandbox did not start within {READY_TIMEOUT_S:g} s"
            Uplink.attach(pid, parent=proc.pid, log=said).close()
        except EnvironmentStartError as e:
            said.seek(0)
            lines = [ln.strip() for ln in said.read(65536).decode(errors="replace").splitlines() if ln.strip()]
            tun = next((ln for ln in lines if "/dev/net/tun" in ln), None)  # the usual reason, named first
            if tun is not None and os.geteuid() != 0:
                return (f"slirp4netns cannot open /dev/net/tun as uid {os.geteuid()} ({tun[:200]}): the runner needs it "
                        "readable and writable (udev's default, mode 0666), or to run as root")
            last = tun or (lines[-1] if lines else None)
            return f"slirp4netns cannot attach a network here: {e}" + (f" ({last[:200]})" if last else "")
        finally:
            proc.kill()
            proc.wait(10)
    return None


def child_pid(info_fd: int, *, timeout_s: float = READY_TIMEOUT_S) -> int:
    """The sandbox's first process (its pid here) from what `bwrap --info-fd` wrote to `info_fd`
    (the read end; it is closed here). EnvironmentStartError if bwrap wrote nothing usable in time."""
    data = b""
    deadline = time.monotonic() + timeout_s
    try:
        while len(data) < MAX_INFO_BYTES:
            try:
                return int(json.loads(data)["child-pid"])
            except (ValueError, KeyError, TypeError):
                pass  # not all of it yet
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([info_fd], [], [], left)[0]:
                raise EnvironmentStartError(f"bwrap did not report its sandbox's pid within {timeout_s:g} s")
            chunk = os.read(info_fd, MAX_INFO_BYTES)
            if not chunk:
                raise EnvironmentStartError(f"bwrap exited before it reported its sandbox's pid ({data[:200]!r})")
            data += chunk
        raise EnvironmentStartError(f"bwrap's sandbox report is not JSON with a child-pid: {data[:200]!r}")
    finally:
        os.close(info_fd)


def this_machines_addresses() -> list[str]:
    """This machine's IPv4 addresses and the prefixes it takes as its own: every interface's
    address (`ip -j addr`) and the destination of every `local` route, in every table (`ip -j
    route`: an AnyIP prefix such as `local 192.168.77.0/24 dev lo` answers on each of its
    addresses without any interface having them). EnvironmentStartError if `ip` fails."""
    links = _ip_json("addr", "show")
    routes = _ip_json("route", "show", "table", "all", "type", "local")
    try:
        return ([str(a["local"]) for link in links for a in link.get("addr_info", []) if "local" in a]
                + [str(r["dst"]) for r in routes if "dst" in r])
    except (TypeError, KeyError, AttributeError) as e:
        raise EnvironmentStartError(f"`ip -j` listed this machine's addresses in a form not known here: {e}") from e


def _ip_json(*args: str) -> Any:
    """What `ip -j -4 ARGS` prints, parsed. EnvironmentStartError if it fails."""
    try:
        out = subprocess.run(["ip", "-j", "-4", *args], capture_output=True, timeout=FENCE_TIMEOUT_S, check=True,
                             stdin=subprocess.DEVNULL).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise EnvironmentStartError(f"could not list this machine's addresses with `ip -j -4 {' '.join(args)}`: {e}") from e


def fenced_prefixes(addresses: Sequence[str] | None = None) -> list[str]:
    """What a sandbox with an uplink must not reach, as IPv4 prefixes: `FENCED_PREFIXES` and each
    of `addresses` (default: `this_machines_addresses()`; an address, as a /32, or a prefix), except
    loopback (the sandbox's own), those already covered, those in slirp4netns's own network (a
    sandbox reaches nothing there but its gateway and DNS), IPv6 ones (an uplink carries IPv4 only)
    and what is not an address."""
    fenced = [ipaddress.IPv4Network(p) for p in FENCED_PREFIXES]
    for a in this_machines_addresses() if addresses is None else addresses:
        try:
            net = ipaddress.ip_network(a, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and not net.network_address.is_loopback \
                and not net.subnet_of(UPLINK_NET) and not any(net.subnet_of(n) for n in fenced):
            fenced.append(net)
    return [str(net) for net in fenced]


def _fence(netns: int, userns: int, prefixes: Sequence[str], pid: int) -> None:
    """Add a `prohibit` route for each of `prefixes` to the routing table of the network namespace
    open as `netns`, owned by the user namespace open as `userns`. EnvironmentStartError if it fails."""
    script = "".join(f"route replace prohibit {p}\n" for p in prefixes).encode()  # again: the same
    argv = [*_in_sandbox(f"/proc/self/fd/{userns}", f"/proc/self/fd/{netns}"), "ip", "-4", "-batch", "-"]
    try:
        done = subprocess.run(argv, input=script, pass_fds=(netns, userns), capture_output=True,
                              timeout=FENCE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise EnvironmentStartError(f"could not fence the sandbox's network (pid {pid}): {e}") from e
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
        said = "; ".join(lines[-3:])[-300:] or f"exit {done.returncode}"  # `ip`'s reason, then "Command failed -:N"
        raise EnvironmentStartError(f"could not fence the sandbox's network (pid {pid}): {said}")


def _in_sandbox(userns: str, netns: str | None) -> list[str]:
    """The command prefix that runs a program in the user namespace at path `userns`, whose root
    this process's user is, and, unless None, in the network namespace at path `netns` (nsenter
    opens them, and closes them before the program starts). The program has that root's
    capabilities, which hold in the sandbox's namespaces only; root is not needed: the runner's
    user made them (bwrap did, as that user)."""
    return ["nsenter", "--preserve-credentials", f"--user={userns}",  # its uid there is 0 already
            *([] if netns is None else [f"--net={netns}"])]


def _open_netns(pid: int, parent: int) -> tuple[int, int]:
    """Descriptors of process `pid`'s network namespace and of the user namespace that owns it
    (bwrap's outer one where it makes two: the inner one, the task's, has no rights over it), checked to
    be those of `parent`'s child (a pid reused meanwhile would be some other process) and not this
    process's own (an uplink attached there would change this machine's network)."""
    try:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise EnvironmentStartError(f"the sandbox (pid {pid}) is gone: {e.strerror}") from e
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        same = os.fstat(fd).st_ino == os.stat("/proc/self/ns/net").st_ino
    except (OSError, ValueError, IndexError) as e:
        os.close(fd)
        raise EnvironmentStartError(f"the sandbox (pid {pid}) is gone: {e}") from e
    if ppid != parent or same:
        os.close(fd)
        why = f"is no longer bwrap's ({parent}) child" if ppid != parent else "shares this machine's network"
        raise EnvironmentStartError(f"the sandbox (pid {pid}) {why}: no uplink attached")
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)  # a new descriptor (close-on-exec)
    except OSError as e:
        os.close(fd)
        raise EnvironmentStartError(f"the owner of the sandbox's (pid {pid}) network namespace is unknown: "
                                    f"{e.strerror}") from e
    return fd, owner


class Uplink:
    """One worker's slirp4netns, for one task (a task's flows and the ports they hold go with it);
    `close()` ends it (idempotent)."""

    def __init__(self, proc: subprocess.Popen[bytes], exit_fd: int) -> None:
        self.proc = proc
        self._exit_fd: int | None = exit_fd  # our end of its exit pipe: closing it ends slirp4netns

    @classmethod
    def attach(cls, pid: int, *, parent: int, log: IO[Any] | int = subprocess.DEVNULL,
               timeout_s: float = READY_TIMEOUT_S, wrap: Callable[[list[str]], list[str]] | None = None,
               fence: Sequence[str] | None = None) -> Uplink:
        """Give the network namespace of process `pid`, a child of `parent` (bwrap), a `tap0` uplink;
        returns once it is configured. EnvironmentStartError (slirp4netns's own messages go to `log`)
        when it is not, or when `pid` is no longer that child or shares this process's namespace.
        wrap: makes the command that starts slirp4netns (the worker's cgroup's `enter_argv`, so that
        the memory and CPU it spends on the sandbox's traffic count against the worker's limits).
        fence: the prefixes the sandbox must not reach (default `fenced_prefixes()`), routed to
        `prohibit` before the uplink exists."""
        netns, userns = _open_netns(pid, parent)
        try:
            _fence(netns, userns, fenced_prefixes() if fence is None else fence, pid)
        except EnvironmentStartError:
            os.close(netns)
            os.close(userns)
            raise
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        # slirp4netns runs as root of the user namespace that owns the network (its rights end
        # there; nsenter opens it through this process, so that slirp4netns holds no descriptor of
        # it), and enters the network by path: given a pid, it would enter the pid's user namespace,
        # for a sandbox that has set itself up bwrap's inner one, without rights over the network
        argv = [*_in_sandbox(f"/proc/{os.getpid()}/fd/{userns}", None), "prlimit", f"--nofile={UPLINK_MAX_FILES}", "--", slirp4netns_exe(),
                "--configure", f"--mtu={UPLINK_MTU}", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
                "--ready-fd", str(ready_w), "--exit-fd", str(exit_r), "--netns-type=path", f"/proc/self/fd/{netns}", "tap0"]
        if wrap is not None:
            argv = wrap(argv)
        try:
            proc = subprocess.Popen(argv, pass_fds=(ready_w, exit_r, netns), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        except OSError as e:
            for fd in (ready_r, ready_w, exit_r, exit_w, userns):
                os.close(fd)
            raise EnvironmentStartError(f"slirp4netns could not start: {e}") from e
        finally:
            os.close(netns)
        os.close(ready_w)
        os.close(exit_r)
        uplink = cls(proc, exit_w)
        try:
            said = os.read(ready_r, 1) if select.select([ready_r], [], [], timeout_s)[0] else None
        finally:
            os.close(ready_r)
            os.close(userns)  # nsenter has opened it by now (slirp4netns is ready or gone)
        if said != b"1":
            uplink.close()
            when = f"was not ready within {timeout_s:g} s" if said is None else f"exited ({proc.returncode})"
            raise EnvironmentStartError(f"slirp4netns did not attach a network to the sandbox (pid {pid}): it {when}")
        return uplink

    def close(self) -> None:
        """End slirp4netns (it exits when its exit pipe closes; killed if it has not after 2 s)."""
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
