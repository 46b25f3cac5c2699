"""The OSWorld runner's lines of `kimi-agent doctor`: can workers be sandboxed and held to limits here."""

from __future__ import annotations

from kimi_agent.doctor import Check
from kimi_agent.tasks import cgroups, sandbox, sandbox_user, uplink


def run_checks() -> list[Check]:
    """The sandbox (bubblewrap), the workers' kernel limits (cgroups) and their own networks
    (slirp4netns); all optional: without them the runner refuses host-acting task files, polls
    memory instead, or lets `--allow-network` workers share this machine's network."""
    why = sandbox.probe()
    bwrap = Check("sandbox (bwrap)", why is None, "task workers run in a bubblewrap sandbox" if why is None else why,
                  "" if why is None else "apt-get install bubblewrap; without it, task files whose steps run "
                  "commands or read this machine's files are skipped (or run on this machine with --no-sandbox)", optional=True)
    mount = cgroups.find_mount()
    why = cgroups.probe()
    detail = (f"cgroup v{mount.version}: workers get kernel memory, process and CPU limits"
              + (f" (their cgroups go in {mount.dirs['memory']})" if mount.version == 2 else "")
              if why is None and not isinstance(mount, str) else str(why))
    limits = Check("worker limits (cgroups)", why is None, detail,
                   "" if why is None else "run the runner as root, or alone in a delegated cgroup v2 "
                   "(`systemd-run --scope -p Delegate=yes kimi-agent run ...`); meanwhile its memory is polled "
                   "and nothing limits processes or CPU", optional=True)
    why = sandbox_user.sandbox_user_problem() or sandbox_user.shut_folders(sandbox.python_paths())
    user = Check("sandbox user", why is None,
                 f"tasks run as uid {sandbox_user.sandbox_host_uid()} of this machine, a user of its own"
                 if why is None else why,
                 "" if why is None or "not root" in why else "tasks run as this machine's root, without capabilities "
                 "but with root's rights on the files the sandbox shows them; see the reason", optional=True)
    why = uplink.uplink_problem()
    network = Check("worker networks (slirp4netns)", why is None,
                    "with --allow-network each worker's sandbox gets a network of its own, fenced off this machine"
                    if why is None else why,
                    "" if why is None else "apt-get install slirp4netns iproute2, and see the reason; without it, "
                    "workers of an --allow-network run share this machine's network (and can reach its loopback "
                    "services and each other's browser and display)", optional=True)
    return [bwrap, user, limits, network]
