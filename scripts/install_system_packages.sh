#!/usr/bin/env bash
# The Debian/Ubuntu packages the test suite runs for real (`make setup-system`; `make test` runs it first):
#
#   openmpi-bin libopenmpi-dev   Open MPI's mpirun/orted and headers: Horovod is built with MPI as well as Gloo, and
#                                the MPI operator's launch path (launcher -> ssh -> orted -> ranks) runs with them
#   openssh-server openssh-client  sshd in the test's worker hosts, ssh in its launcher (the operator's bootstrap)
#   iproute2                     `ip netns` / veth: the test's worker and launcher hosts are network namespaces
#   socat                        the launcher host's route to the Kubernetes API emulator (as a pod's to the API)
#   postgresql                   the tracking server's store as k8s/mlflow/server.yaml configures it
#   chromium                     the MLflow UI checks (headless)
#
# As root it installs what is missing with apt-get; otherwise it names the missing packages and fails, so that a
# test never stands in for a missing tool by skipping. SYSTEM_PACKAGES overrides the list.
set -euo pipefail

PACKAGES=${SYSTEM_PACKAGES:-"openmpi-bin libopenmpi-dev openssh-server openssh-client iproute2 socat postgresql chromium"}
missing=()
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_system_packages.sh: missing ${missing[*]}; this script knows apt-get only: install them with your" \
         "system's package manager" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_system_packages.sh: missing Debian packages: ${missing[*]}" >&2
    echo "  install them as root:  sudo make setup-system   (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d: package scripts must not start services (sshd, PostgreSQL) on this machine; the tests start their own
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
