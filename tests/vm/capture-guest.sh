#!/bin/bash
# In-guest half of the kernel-matrix test (tests/tests/vm.rs), run by
# run.sh as the guest's cmd.sh: one registry attempt, observed by the real
# agent on this guest's kernel.
#
# Inside the guest (which has no network device): a veth pair into a netns
# `client`, 198.18.0.1 on the root side (dnsmasq answering quay.io with
# 198.18.0.1, and a TLS docker-registry on :443 with a CA made here), the
# client at 198.18.0.2. The agent, /mnt/host/registry-observer, watches the
# whole guest while skopeo in the netns inspects an image on quay.io.
#
# Results go to /mnt/host/out: report.json, agent.stdout/.stderr, agent.rc,
# skopeo.log, progs-during.txt and progs-after.txt (`bpftool prog list`
# while the agent runs and after it exits), tree-*.txt (`bpftool cgroup
# tree`, which bpftool 7.1 leaves empty on 5.10), kernel-release.
# The host-side test judges them; this script only fails when the setup
# itself cannot be made. `AGENT_ARGS` (a file /mnt/host/agent-args, one
# argument per line) adds arguments to `registry-observer run`.
set -euo pipefail

host=/mnt/host
out=$host/out
work=/run/vmtest-capture
rm -rf "$out" "$work"
mkdir -p "$out" "$work"
uname -r > "$out/kernel-release"

step() { echo "capture-guest: $*"; }
# Polls a command (bounded: 0.2 s steps, $1 seconds in all).
wait_for() {
  local seconds=$1; shift
  local i
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "capture-guest: timed out after ${seconds}s waiting for: $*" >&2
  return 1
}

step "network: veth reg0h 198.18.0.1 <-> netns client 198.18.0.2"
ip netns add client
ip link add reg0h type veth peer name reg0n
ip link set reg0n netns client
ip addr add 198.18.0.1/24 dev reg0h
ip link set reg0h up
ip -n client addr add 198.18.0.2/24 dev reg0n
ip -n client link set reg0n up
ip -n client link set lo up
ip -n client route add default via 198.18.0.1
mkdir -p /etc/netns/client
echo 'nameserver 198.18.0.1' > /etc/netns/client/resolv.conf

step "dnsmasq on 198.18.0.1:53 (quay.io -> 198.18.0.1, everything else NXDOMAIN)"
cat > "$work/dnsmasq.conf" <<EOF
no-resolv
no-hosts
bind-interfaces
listen-address=198.18.0.1
user=root
log-queries
log-facility=$out/dnsmasq.log
address=/quay.io/198.18.0.1
address=/#/
EOF
dnsmasq --conf-file="$work/dnsmasq.conf" --keep-in-foreground &
dnsmasq_pid=$!

step "test CA and a quay.io certificate"
tls=$work/tls
mkdir -p "$tls" "$work/certs"
cat > "$tls/server.cnf" <<'EOF'
[req]
prompt = no
distinguished_name = dn
[dn]
CN = quay.io
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:quay.io,IP:198.18.0.1
EOF
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
(cd "$tls" &&
  openssl req -x509 -nodes -days 2 -subj '/CN=registry-observer vm test CA' \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    "${ec[@]}" -keyout ca.key -out ca.crt 2>/dev/null &&
  openssl req -new -config server.cnf -nodes "${ec[@]}" -keyout server.key \
    -out server.csr 2>/dev/null &&
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.cnf -extensions v3_server -out server.crt 2>/dev/null)
# Only the CA in the cert dir: containers/image reads a .key there as half
# of a client certificate.
cp "$tls/ca.crt" "$work/certs/"

step "docker-registry on 198.18.0.1:443"
mkdir -p "$work/storage"
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 198.18.0.1:443
  secret: observer-vm-test-not-secret
  tls:
    certificate: $tls/server.crt
    key: $tls/server.key
EOF
docker-registry serve "$work/registry.yml" > "$out/registry.log" 2>&1 &
registry_pid=$!
wait_for 20 bash -c 'exec 3<>/dev/tcp/198.18.0.1/443'
wait_for 10 bash -c 'exec 3<>/dev/tcp/198.18.0.1/53'

agent_args=()
if [ -f "$host/agent-args" ]; then mapfile -t agent_args < "$host/agent-args"; fi
step "agent: registry-observer run ${agent_args[*]}"
"$host/registry-observer" run --report "$out/report.json" \
  --metrics-addr 127.0.0.1:9669 --control-socket "$work/control.sock" \
  "${agent_args[@]}" > "$out/agent.stdout" 2> "$out/agent.stderr" &
agent_pid=$!
if ! wait_for 120 curl -sf http://127.0.0.1:9669/readyz; then
  # Exited (start-up failure: its stderr says why) or never got ready.
  kill -INT "$agent_pid" 2>/dev/null || true
fi
if kill -0 "$agent_pid" 2>/dev/null; then
  curl -s http://127.0.0.1:9669/readyz > "$out/readyz.txt" || true
  bpftool cgroup tree /sys/fs/cgroup > "$out/tree-during.txt" 2>&1 || true
  bpftool prog list > "$out/progs-during.txt" 2>&1 || true
  step "client: skopeo inspect docker://quay.io/vmtest/busybox:1 from netns client"
  # The image does not exist: the registry answers "manifest unknown",
  # after a real DNS lookup, TCP connect and TLS handshake.
  rc=0
  timeout 60 ip netns exec client skopeo inspect --cert-dir "$work/certs" \
    docker://quay.io/vmtest/busybox:1 > "$out/skopeo.log" 2>&1 || rc=$?
  echo "$rc" > "$out/skopeo.rc"
  # The live line is printed once the attempt is decoded; give it time
  # (bounded) so the report is not cut before the drain.
  wait_for 30 grep -q 'quay.io' "$out/agent.stdout" || true
  kill -INT "$agent_pid"
fi
rc=0
wait "$agent_pid" || rc=$?
echo "$rc" > "$out/agent.rc"
step "agent exited $rc"
bpftool cgroup tree /sys/fs/cgroup > "$out/tree-after.txt" 2>&1 || true
bpftool prog list > "$out/progs-after.txt" 2>&1 || true

kill "$registry_pid" "$dnsmasq_pid" 2>/dev/null || true
wait "$registry_pid" "$dnsmasq_pid" 2>/dev/null || true
ip netns del client
ip link del reg0h 2>/dev/null || true
sync
