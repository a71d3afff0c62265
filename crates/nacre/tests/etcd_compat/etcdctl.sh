#!/usr/bin/env bash
# Black-box etcd v3 compatibility checks through the real `etcdctl`
# (ETCDCTL_API=3, written against etcd 3.4's etcdctl). Every check runs one
# command and compares its output exactly (or with an anchored regex where
# the output holds ids, times or URLs); the first mismatch prints the
# command, what was expected and what came, and exits 1.
#
#   ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 NODES=3 ./etcdctl.sh
#
# ENDPOINTS  every member's etcd gRPC endpoint, host:port, comma-separated
# NODES      how many members the cluster has (1 or 3)
# CHECK_SNAPSHOT_STATUS=1 (default) also runs `etcdctl snapshot status` on
#            the saved snapshot, which opens it as a bbolt database: set 0
#            for a server whose snapshot is in a format of its own.
# SNAPSHOT_FILE  where `snapshot save` writes (default: in a temp dir that
#            is removed at exit); the caller may check the file afterwards.
#
# Revisions are never hard-coded: they are read from `-w json` headers and
# compared only for equality and order (a server may skip numbers).
# Keys live under a fresh prefix, so the script may run again on the same
# cluster. Sections run in order; `compaction` must stay last.
# shellcheck disable=SC2154 # `rev VAR ...` assigns the revisions (r1, w1, ...)
set -uo pipefail

: "${ENDPOINTS:?set ENDPOINTS to every member etcd endpoint, host:port,...}"
: "${NODES:?set NODES to the number of members}"
CHECK_SNAPSHOT_STATUS=${CHECK_SNAPSHOT_STATUS:-1}
export ETCDCTL_API=3

WORK=$(mktemp -d)
SNAPSHOT_FILE=${SNAPSHOT_FILE:-$WORK/snapshot.db}
P="compat-$$-$RANDOM" # this run's key prefix
FIRST=${ENDPOINTS%%,*}
# The command-timeout is generous: a 3-node cluster on a loaded CI machine
# may be slow, and a lock or election call waits on purpose.
E=(etcdctl --endpoints="$ENDPOINTS" --command-timeout=20s)
BG_PIDS=()
got="" # the last expect_*'s output

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    # A learner left by a failed run would make the next one count wrong.
    [ -z "${new_id:-}" ] || ectl member remove "$new_id" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- helpers ---------------------------------------------------------------

ectl() { "${E[@]}" "$@"; }

section() { printf '\n==== %s\n' "$*"; }

# How a command is shown: `ectl` as the etcdctl it runs, `txn FILE` with
# the input it reads.
shown() {
    local s="$*"
    s=${s/#"${E[*]} "/etcdctl }
    if [ "$1" = txn ]; then
        echo "etcdctl txn${3:+ ${*:3}} < $2"
        sed 's/^/  | /' "$2"
    else
        echo "${s/#ectl /etcdctl }"
    fi
}

mismatch() { # WHAT EXPECTED ACTUAL [STDERR]
    {
        echo "FAIL: $1"
        echo "--- expected:"
        echo "$2"
        echo "--- actual:"
        echo "$3"
        if [ -n "${4:-}" ]; then
            echo "--- stderr:"
            echo "$4"
        fi
    } >&2
    exit 1
}

# expect_eq EXPECTED CMD...: CMD exits 0 and prints exactly EXPECTED on
# stdout (trailing newlines aside, as $(...) drops them). Like every
# expect_*, it leaves the output in $got.
expect_eq() {
    local want=$1 rc
    shift
    echo "\$ $(shown "$@")"
    got=$("$@" 2>"$WORK/stderr")
    rc=$?
    [ "$rc" -eq 0 ] || mismatch "exit code $rc: $(shown "$@")" "$want" "$got" "$(cat "$WORK/stderr")"
    [ "$got" == "$want" ] || mismatch "$(shown "$@")" "$want" "$got" "$(cat "$WORK/stderr")"
}

# expect_match REGEX CMD...: CMD exits 0 and its whole stdout matches the
# extended regex REGEX (anchor it with ^...$ to match all of it).
expect_match() {
    local re=$1 rc
    shift
    echo "\$ $(shown "$@")"
    got=$("$@" 2>"$WORK/stderr")
    rc=$?
    [ "$rc" -eq 0 ] || mismatch "exit code $rc: $(shown "$@")" "/$re/" "$got" "$(cat "$WORK/stderr")"
    [[ $got =~ $re ]] || mismatch "$(shown "$@")" "/$re/" "$got" "$(cat "$WORK/stderr")"
}

# expect_fail TEXT CMD...: CMD exits non-zero and its stdout and stderr
# together contain TEXT.
expect_fail() {
    local text=$1 rc
    shift
    echo "\$ $(shown "$@")   (must fail)"
    got=$("$@" 2>&1)
    rc=$?
    [ "$rc" -ne 0 ] || mismatch "exit code 0, not a failure: $(shown "$@")" "... $text ..." "$got"
    [[ $got == *"$text"* ]] || mismatch "$(shown "$@")" "... $text ..." "$got"
}

# check_eq WHAT EXPECTED ACTUAL, check_match WHAT REGEX ACTUAL: for values
# the script derived itself (from JSON, files, ...).
check_eq() {
    echo "  check: $1"
    [ "$3" == "$2" ] || mismatch "$1" "$2" "$3"
}
check_match() {
    echo "  check: $1"
    [[ $3 =~ $2 ]] || mismatch "$1" "/$2/" "$3"
}

# json EXPR: evaluates the Python expression EXPR on the JSON document read
# from stdin, bound to `d`; b(s) decodes etcd's base64 keys and values.
# Booleans print as true/false, lists one item a line.
json() {
    python3 -c '
import base64, json, sys
d = json.load(sys.stdin)
b = lambda s: base64.b64decode(s).decode()
r = eval(sys.argv[1])
if isinstance(r, bool):
    r = str(r).lower()
elif isinstance(r, list):
    r = "\n".join(str(x) for x in r)
print(r)' "$1"
}

# rev VAR CMD...: runs the etcdctl write CMD with -w json and sets VAR to
# the revision in its header (the revision the write created).
rev() {
    local var=$1 out
    shift
    out=$(ectl "$@" -w json) || mismatch "$(shown ectl "$@") -w json failed" "exit 0" "$out"
    printf -v "$var" %s "$(echo "$out" | json 'd["header"]["revision"]')"
    [[ ${!var} =~ ^[0-9]+$ ]] || mismatch "$(shown ectl "$@") -w json: header.revision" "a number" "$out"
}

# before A B: revision A is older than revision B.
before() { check_eq "revision $1 < revision $2" true "$(python3 -c "print(str($1 < $2).lower())")"; }

# wait_until WHAT SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_until() {
    local what=$1 deadline=$((SECONDS + $2))
    shift 2
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "FAIL: timed out waiting for $what" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# txn FILE [FLAGS]: etcdctl txn with FILE as its input.
txn() { ectl txn "${@:2}" <"$1"; }

# lines_at_least FILE N: FILE has at least N lines.
lines_at_least() { [ "$(wc -l <"$1")" -ge "$2" ]; }

# background OUT CMD...: runs CMD in the background with its stdout and
# stderr in OUT; its pid is in $BG and is killed at exit.
background() {
    local out=$1
    shift
    echo "\$ $(shown "$@") &"
    "$@" >"$out" 2>&1 &
    BG=$!
    BG_PIDS+=("$BG")
}

# stop PID: SIGTERM (etcdctl's lock and elect release on it), then wait.
stop() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

# ---- sections ----------------------------------------------------------------

section "cluster is up: $ENDPOINTS ($NODES nodes)"
# A fresh cluster may still be electing its first leader: wait until every
# endpoint commits a request, or show why not.
healthy() { etcdctl --endpoints="$ENDPOINTS" --command-timeout=3s endpoint health >"$WORK/health" 2>&1; }
deadline=$((SECONDS + 30))
until healthy; do
    [ "$SECONDS" -lt "$deadline" ] ||
        mismatch "etcdctl endpoint health, for 30 s" "every endpoint healthy" "$(cat "$WORK/health")"
    sleep 0.2
done
echo "healthy"

section "put / get / del"
expect_eq "OK" ectl put "$P/k/a" 1
expect_eq "$P/k/a
1" ectl get "$P/k/a"
expect_eq "" ectl get "$P/k/missing"
expect_eq "OK" ectl put "$P/k/b" 2
expect_eq "OK" ectl put "$P/k/c" 3
expect_eq "$P/k/a
1
$P/k/b
2
$P/k/c
3" ectl get "$P/k/" --prefix
# [key, range_end): a range between two keys.
expect_eq "$P/k/a
1
$P/k/b
2" ectl get "$P/k/a" "$P/k/c"
# --keys-only prints each key followed by an empty line (the last one is
# dropped by $(...), as every trailing newline).
expect_eq "$P/k/a

$P/k/b

$P/k/c" ectl get "$P/k/" --prefix --keys-only
expect_eq "1
2
3" ectl get "$P/k/" --prefix --print-value-only
expect_eq "$P/k/a
1
$P/k/b
2" ectl get "$P/k/" --prefix --limit=2
out=$(ectl get "$P/k/" --prefix --limit=2 -w json)
check_eq "--limit=2 -w json: count is the whole range" 3 "$(echo "$out" | json 'd["count"]')"
check_eq "--limit=2 -w json: more" true "$(echo "$out" | json 'd.get("more", False)')"
check_eq "--limit=2 -w json: two kvs" "$P/k/a
$P/k/b" "$(echo "$out" | json '[b(kv["key"]) for kv in d["kvs"]]')"
# put --prev-kv prints OK, then the previous key and value.
expect_eq "OK
$P/k/c
3" ectl put "$P/k/c" 33 --prev-kv
# del prints how many keys it deleted; --prev-kv then each deleted pair.
expect_eq "1
$P/k/c
33" ectl del "$P/k/c" --prev-kv
expect_eq "0" ectl del "$P/k/c"
expect_eq "2" ectl del "$P/k/" --prefix
expect_eq "" ectl get "$P/k/" --prefix

section "revisions: -w json and get --rev"
rev r_other put "$P/r/other" x
rev r1 put "$P/r/key" v1
rev r2 put "$P/r/key" v2
before "$r_other" "$r1"
before "$r1" "$r2"
out=$(ectl get "$P/r/key" -w json)
echo "$out"
check_eq "-w json: key" "$P/r/key" "$(echo "$out" | json 'b(d["kvs"][0]["key"])')"
check_eq "-w json: value" v2 "$(echo "$out" | json 'b(d["kvs"][0]["value"])')"
check_eq "-w json: create_revision is the first put's" "$r1" "$(echo "$out" | json 'd["kvs"][0]["create_revision"]')"
check_eq "-w json: mod_revision is the second put's" "$r2" "$(echo "$out" | json 'd["kvs"][0]["mod_revision"]')"
check_eq "-w json: version" 2 "$(echo "$out" | json 'd["kvs"][0]["version"]')"
check_eq "-w json: count" 1 "$(echo "$out" | json 'd["count"]')"
check_eq "-w json: header.revision is at least mod_revision" true \
    "$(echo "$out" | json 'd["header"]["revision"] >= d["kvs"][0]["mod_revision"]')"
expect_eq "$P/r/key
v1" ectl get "$P/r/key" --rev="$r1"
expect_eq "$P/r/key
v2" ectl get "$P/r/key" --rev="$r2"
# Before its first put the key did not exist.
expect_eq "" ectl get "$P/r/key" --rev="$r_other"
out=$(ectl get "$P/r/key" --rev="$r1" -w json)
check_eq "get --rev -w json: mod_revision" "$r1" "$(echo "$out" | json 'd["kvs"][0]["mod_revision"]')"
check_eq "get --rev -w json: version" 1 "$(echo "$out" | json 'd["kvs"][0]["version"]')"
rev r_del del "$P/r/key"
before "$r2" "$r_del"
expect_eq "" ectl get "$P/r/key"
expect_eq "$P/r/key
v2" ectl get "$P/r/key" --rev="$r2"

section "get --sort-by / --order"
# Three keys whose orders by key, value, create, modify and version all
# differ, with no ties: created b, c, a; a written three times, b twice.
while read -r k v; do
    ectl put "$P/s/$k" "$v" >/dev/null || mismatch "etcdctl put $P/s/$k $v failed" OK "(an error)"
done <<EOF
b 0
c 2
a 0
a 0
a 1
b 3
EOF
sorted_keys() { ectl get "$P/s/" --prefix --keys-only --sort-by="$1" --order="$2" | sed '/^$/d'; }
check_sorted() { # BY ASCENDING_ORDER
    local by=$1 a b c
    read -r a b c <<<"$2"
    check_eq "sort-by=$by ASCEND" "$P/s/$a
$P/s/$b
$P/s/$c" "$(sorted_keys "$by" ASCEND)"
    check_eq "sort-by=$by DESCEND" "$P/s/$c
$P/s/$b
$P/s/$a" "$(sorted_keys "$by" DESCEND)"
}
check_sorted KEY "a b c"
check_sorted VALUE "a c b"
check_sorted CREATE "b c a"
check_sorted MODIFY "c a b"
check_sorted VERSION "c b a"
# The server sorts the whole range, then applies the limit.
expect_eq "$P/s/b
3" ectl get "$P/s/" --prefix --sort-by=MODIFY --order=DESCEND --limit=1
expect_eq "$P/s/a
1" ectl get "$P/s/" --prefix --sort-by=VERSION --order=DESCEND --limit=1

section "txn (interactive input from a file)"
rev rt put "$P/t/key" v1
# Compares, a blank line, success ops, a blank line, failure ops, a blank
# line: etcdctl's interactive txn format.
cat >"$WORK/txn-success" <<EOF
val("$P/t/key") = "v1"
ver("$P/t/key") = "1"
create("$P/t/key") = "$rt"
mod("$P/t/key") = "$rt"

put $P/t/branch success
get $P/t/key

put $P/t/branch failure

EOF
expect_eq "SUCCESS

OK

$P/t/key
v1" txn "$WORK/txn-success"
expect_eq "$P/t/branch
success" ectl get "$P/t/branch"
# Each compare false in turn takes the failure branch.
txn_fails() { # COMPARE
    printf '%s\n\nput %s success\n\nput %s failure\nget %s\n\n' \
        "$1" "$P/t/branch" "$P/t/branch" "$P/t/key" >"$WORK/txn-failure"
    echo "  txn compare: $1"
    expect_eq "FAILURE

OK

$P/t/key
v1" txn "$WORK/txn-failure"
    expect_eq "$P/t/branch
failure" ectl get "$P/t/branch"
    ectl put "$P/t/branch" reset >/dev/null
}
txn_fails "val(\"$P/t/key\") = \"nope\""
txn_fails "ver(\"$P/t/key\") > \"1\""
txn_fails "mod(\"$P/t/key\") > \"$rt\""
txn_fails "create(\"$P/t/key\") < \"$rt\""
txn_fails "ver(\"$P/t/missing\") > \"0\""
# A missing key has version 0 and create revision 0: put-if-absent.
printf '%s\n\nput %s created\n\n\n' "create(\"$P/t/new\") = \"0\"" "$P/t/new" >"$WORK/txn-absent"
expect_eq "SUCCESS

OK" txn "$WORK/txn-absent"
expect_eq "FAILURE" txn "$WORK/txn-absent"
# The revision a txn's writes got, and a delete in a txn.
printf '%s\n\ndel %s\n\n\n' "mod(\"$P/t/key\") = \"$rt\"" "$P/t/key" >"$WORK/txn-del"
out=$(txn "$WORK/txn-del" -w json)
check_eq "txn -w json: succeeded" true "$(echo "$out" | json 'd["succeeded"]')"
check_eq "txn -w json: one key deleted" 1 \
    "$(echo "$out" | json 'd["responses"][0]["Response"]["ResponseDeleteRange"]["deleted"]')"
expect_eq "" ectl get "$P/t/key"

section "watch"
out="$WORK/watch"
background "$out" "${E[@]}" watch --prefix "$P/w/"
wpid=$BG
# The watch is live once it reports a write: put a marker until it shows
# (a watch registered after a write would not see it).
marker_seen() {
    ectl put "$P/w/ready" ready >/dev/null
    grep -q '^ready$' "$out"
}
wait_until "the watch to report the marker" 20 marker_seen
rev w1 put "$P/w/a" 1
ectl put "$P/x/outside" 1 >/dev/null # not under the prefix: not reported
rev w2 put "$P/w/a" 2
rev w3 del "$P/w/a"
rev w4 put "$P/w/b" 3
before "$w1" "$w2"
before "$w2" "$w3"
before "$w3" "$w4"
events="PUT
$P/w/a
1
PUT
$P/w/a
2
DELETE
$P/w/a

PUT
$P/w/b
3"
# The events after the last marker.
after_marker() { python3 -c '
import sys
text = open(sys.argv[1]).read()
marker = "PUT\n" + sys.argv[2] + "\nready\n"
print(text[text.rfind(marker) + len(marker):] if marker in text else text, end="")' "$1" "$P/w/ready"; }
live_done() { [ "$(after_marker "$out" | wc -l)" -ge 12 ]; }
wait_until "the watch to report 4 events" 20 live_done
sleep 0.5 # anything more (it must not come) would show now
stop "$wpid"
check_eq "watch --prefix: the events after the marker" "$events" "$(after_marker "$out")"

# replay OUT LINES CMD...: a watch of past revisions into OUT, stopped
# once it printed LINES lines.
replay() {
    local file=$1 lines=$2
    shift 2
    background "$file" "${E[@]}" "$@"
    wait_until "$(shown etcdctl "$@") to print $lines lines" 20 lines_at_least "$file" "$lines"
    sleep 0.5 # anything more (it must not come) would show now
    stop "$BG"
}
replay "$WORK/replay1" 12 watch --prefix "$P/w/" --rev="$w1"
check_eq "watch --rev replays the 4 events" "$events" "$(cat "$WORK/replay1")"
replay "$WORK/replay2" 6 watch --prefix "$P/w/" --rev="$w3"
check_eq "watch --rev from the delete" "$(echo "$events" | tail -n 6)" "$(cat "$WORK/replay2")"
replay "$WORK/replay3" 9 watch "$P/w/a" --rev="$w1"
check_eq "watch KEY --rev" "$(echo "$events" | head -n 9)" "$(cat "$WORK/replay3")"
# -w json prints one WatchResponse a line (the replay may come in several):
# the events' types, keys and revisions.
json_events() { python3 -c '
import base64, json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        for e in json.loads(line).get("Events") or []:
            kv = e["kv"]
            print(e.get("type", 0), base64.b64decode(kv["key"]).decode(), kv["mod_revision"])' "$1"; }
background "$WORK/replay4" "${E[@]}" watch --prefix "$P/w/" --rev="$w1" -w json
four_events() { [ "$(json_events "$WORK/replay4" | wc -l)" -ge 4 ]; }
wait_until "4 events in JSON" 20 four_events
sleep 0.5
stop "$BG"
check_eq "watch -w json: event types (0 PUT, 1 DELETE), keys and mod_revisions" \
    "0 $P/w/a $w1
0 $P/w/a $w2
1 $P/w/a $w3
0 $P/w/b $w4" "$(json_events "$WORK/replay4")"

section "lease"
expect_match '^lease [0-9a-f]+ granted with TTL\(60s\)$' ectl lease grant 60
lease=$(awk '{print $2}' <<<"$got")
expect_eq "OK" ectl put "$P/l/a" 1 --lease="$lease"
expect_eq "OK" ectl put "$P/l/b" 2 --lease="$lease"
expect_eq "lease $lease keepalived with TTL(60)" ectl lease keep-alive --once "$lease"
expect_match "^lease $lease granted with TTL\(60s\), remaining\([0-9]+s\), attached keys\(\[$P/l/[ab] $P/l/[ab]\]\)$" \
    ectl lease timetolive "$lease" --keys
out=$(ectl lease timetolive "$lease" --keys -w json)
# The attached keys' order is not specified (etcd keeps them in a map).
check_eq "timetolive -w json: keys" "$P/l/a
$P/l/b" "$(echo "$out" | json 'sorted(b(k) for k in d["keys"])')"
check_eq "timetolive -w json: granted-ttl" 60 "$(echo "$out" | json 'd["granted-ttl"]')"
check_eq "timetolive -w json: 0 < ttl <= 60" true "$(echo "$out" | json '0 < d["ttl"] <= 60')"
# Other leases (sessions of other clients) may exist: check that ours is
# listed and that the count matches the lines.
out=$(ectl lease list)
echo "$out"
check_match "lease list: header" '^found [0-9]+ leases' "$out"
check_eq "lease list: the count matches the ids listed" "$(echo "$out" | head -n 1 | awk '{print $2}')" \
    "$(echo "$out" | tail -n +2 | grep -c .)"
check_eq "lease list: ours is listed" "$lease" "$(echo "$out" | grep -x "$lease")"
expect_eq "lease $lease revoked" ectl lease revoke "$lease"
expect_eq "" ectl get "$P/l/" --prefix
expect_eq "lease $lease already expired" ectl lease timetolive "$lease"
expect_fail "requested lease not found" ectl lease revoke "$lease"
expect_fail "lease not found" ectl put "$P/l/c" 3 --lease="$lease"
# A lease that is not kept alive expires, and its key with it.
short=$(ectl lease grant 3 | awk '{print $2}')
expect_eq "OK" ectl put "$P/l/short" 1 --lease="$short"
key_gone() { [ -z "$(ectl get "$P/l/short")" ]; }
wait_until "the key of a 3 s lease to vanish" 20 key_gone
expect_eq "lease $short already expired" ectl lease timetolive "$short"

section "lock"
# The second holder asks while the first holds the lock (it has printed
# "one"), so it must wait until the first's command exits.
out="$WORK/lock"
: >"$out"
echo "\$ etcdctl lock $P/L -- sh -c 'echo \"one \$ETCD_LOCK_KEY \$ETCD_LOCK_REV\"; sleep 2; echo one-done' &"
# shellcheck disable=SC2016 # the holder's shell expands them
"${E[@]}" lock "$P/L" -- sh -c 'echo "one $ETCD_LOCK_KEY $ETCD_LOCK_REV"; sleep 2; echo one-done' >>"$out" 2>&1 &
l1=$!
BG_PIDS+=("$l1")
wait_until "the first lock holder" 20 grep -q '^one' "$out"
echo "\$ etcdctl lock $P/L -- sh -c 'echo two' &"
"${E[@]}" lock "$P/L" -- sh -c 'echo two' >>"$out" 2>&1 &
l2=$!
BG_PIDS+=("$l2")
wait "$l1" || mismatch "the first etcdctl lock failed" "exit 0" "$(cat "$out")"
wait "$l2" || mismatch "the second etcdctl lock failed" "exit 0" "$(cat "$out")"
# The holder's command sees its lock key (NAME/...) and revision.
check_match "lock: one ran, then two" "^one $P/L/[^ ]+ [0-9]+
one-done
two$" "$(cat "$out")"
# Without a command, lock prints its key and holds until a signal; the key
# is a key like any other while held, and gone once released.
background "$WORK/lock2" "${E[@]}" lock "$P/L2"
l3=$BG
wait_until "etcdctl lock to print its key" 20 grep -q . "$WORK/lock2"
key=$(cat "$WORK/lock2")
check_match "lock prints NAME/..." "^$P/L2/[^ ]+$" "$key"
expect_eq "$key" ectl get "$P/L2" --prefix --keys-only
stop "$l3"
expect_eq "" ectl get "$P/L2" --prefix --keys-only

section "elect"
obs="$WORK/observe" c1="$WORK/cand1" c2="$WORK/cand2"
background "$obs" "${E[@]}" elect --listen "$P/E"
po=$BG
background "$c1" "${E[@]}" elect "$P/E" p1
pc1=$BG
# A leader prints its key (NAME/...) and its proposal.
wait_until "p1 to be elected" 20 lines_at_least "$c1" 2
check_match "p1 leads" "^$P/E/[^ ]+
p1$" "$(cat "$c1")"
background "$c2" "${E[@]}" elect "$P/E" p2
pc2=$BG
wait_until "the observer to see p1" 20 grep -qx p1 "$obs"
sleep 1.5 # p2 must still be waiting
check_eq "p2 waits while p1 leads" "" "$(cat "$c2")"
stop "$pc1" # resigns
wait_until "p2 to be elected" 20 lines_at_least "$c2" 2
check_match "p2 leads" "^$P/E/[^ ]+
p2$" "$(cat "$c2")"
wait_until "the observer to see p2" 20 grep -qx p2 "$obs"
# The observer prints each leader's key and proposal, in order.
check_eq "the observer saw p1, then p2" "p1
p2" "$(sed -n '2~2p' "$obs")"
check_eq "the observer's keys are the leaders' keys" "$(head -n 1 "$c1")
$(head -n 1 "$c2")" "$(sed -n '1~2p' "$obs")"
stop "$pc2"
stop "$po"

section "member list / add / remove"
out=$(ectl member list)
echo "$out"
check_eq "member list: $NODES lines" "$NODES" "$(echo "$out" | grep -c .)"
# ID, status, name, peer URLs, client URLs, is learner.
while IFS= read -r line; do
    check_match "member line" '^[0-9a-f]+, started, [^,]+, [^,]+, [^,]+, false$' "$line"
done <<<"$out"
out=$(ectl member list -w json)
check_eq "member list -w json: $NODES members" "$NODES" "$(echo "$out" | json 'len(d["members"])')"
check_eq "member list -w json: every member has a name" true \
    "$(echo "$out" | json 'all(m.get("name") for m in d["members"])')"
# `--cluster` commands dial the members' client URLs: they must be the etcd
# endpoints. etcd gives them with `http://`; Nacre without, as HTTP/2 under
# it refuses an `:authority` with a scheme (docs/etcd.md): either is fine.
check_eq "member list -w json: the client URLs are the etcd endpoints" \
    "$(tr , '\n' <<<"$ENDPOINTS" | sort)" \
    "$(echo "$out" | json 'sorted(u.replace("http://", "") for m in d["members"] for u in m.get("clientURLs", []))')"
member_ids=$(echo "$out" | json 'sorted(m["ID"] for m in d["members"])')
# A learner that will never start: adding it changes no quorum.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name="$P-learner"
# etcdctl prints ids here as %16x: padded with spaces when short.
expect_match "^Member +[0-9a-f]+ added to cluster +[0-9a-f]+
+ETCD_NAME=\"$name\"
.*ETCD_INITIAL_CLUSTER_STATE=\"existing\"$" \
    ectl member add "$name" --peer-urls="http://127.0.0.1:$port" --learner
new_id=$(ectl member list | grep ":$port" | cut -d, -f1)
check_match "member list: the learner is listed (by its peer port)" '^[0-9a-f]+$' "$new_id"
line=$(ectl member list | grep "^$new_id, ")
# etcd lists a member that never started with no name ("unstarted, , ");
# a server that keeps the name it was added with may show it.
check_match "member list: the learner's line" \
    "^$new_id, (unstarted, |[a-z]+, $name), [^,]*127\.0\.0\.1:${port}[^,]*, [^,]*, true$" "$line"
check_eq "member list: $NODES + 1 members" "$((NODES + 1))" "$(ectl member list | grep -c .)"
expect_match "^Member +$new_id removed from cluster +[0-9a-f]+$" ectl member remove "$new_id"
out=$(ectl member list)
echo "$out"
check_eq "member list: $NODES lines again" "$NODES" "$(echo "$out" | grep -c .)"
check_eq "member list: the learner is gone" "" "$(echo "$out" | grep -e "$new_id" -e ":$port" -e "$name")"
new_id="" # removed: nothing for cleanup to do

section "endpoint status / health --cluster"
out=$(ectl endpoint status --cluster -w json)
echo "$out"
check_eq "endpoint status --cluster: $NODES statuses" "$NODES" "$(echo "$out" | json 'len(d)')"
check_eq "endpoint status --cluster: the endpoints" \
    "$(tr , '\n' <<<"$ENDPOINTS" | sort)" "$(echo "$out" | json 'sorted(s["Endpoint"].replace("http://", "") for s in d)')"
check_eq "endpoint status --cluster: one member id each, the members'" "$member_ids" \
    "$(echo "$out" | json 'sorted(s["Status"]["header"]["member_id"] for s in d)')"
check_eq "endpoint status --cluster: all agree on the leader" 1 \
    "$(echo "$out" | json 'len(set(s["Status"]["leader"] for s in d))')"
check_eq "endpoint status --cluster: exactly one is the leader" 1 \
    "$(echo "$out" | json 'sum(s["Status"]["leader"] == s["Status"]["header"]["member_id"] for s in d)')"
# etcdctl prints health on stderr.
echo "\$ etcdctl endpoint health --cluster"
out=$(ectl endpoint health --cluster 2>&1) || mismatch "endpoint health --cluster failed" "exit 0" "$out"
echo "$out"
check_eq "endpoint health --cluster: $NODES healthy" "$NODES" \
    "$(echo "$out" | grep -cE '^(http://)?[^ ]+ is healthy: successfully committed proposal: took = ')"
check_eq "endpoint health --cluster: nothing else" "$NODES" "$(echo "$out" | grep -c .)"

section "snapshot save"
rev r_snap put "$P/snap" before-snapshot
# A snapshot comes from one member: etcdctl refuses several endpoints.
expect_eq "Snapshot saved at $SNAPSHOT_FILE" etcdctl --endpoints="$FIRST" snapshot save "$SNAPSHOT_FILE"
check_eq "the snapshot file is not empty" true "$([ -s "$SNAPSHOT_FILE" ] && echo true || echo false)"
if [ "$CHECK_SNAPSHOT_STATUS" = 1 ]; then
    out=$(etcdctl snapshot status "$SNAPSHOT_FILE" -w json 2>/dev/null) ||
        mismatch "etcdctl snapshot status failed" "exit 0" "$out"
    echo "$out"
    check_eq "snapshot status: it holds the last write's revision" true \
        "$(echo "$out" | json "d['revision'] >= $r_snap")"
    check_eq "snapshot status: it holds keys" true "$(echo "$out" | json 'd["totalKey"] > 0')"
else
    echo "snapshot status not checked (CHECK_SNAPSHOT_STATUS=$CHECK_SNAPSHOT_STATUS)"
fi

section "compaction"
# Compact at the watch section's last event: the first is then gone.
expect_eq "compacted revision $w4" ectl compaction "$w4"
echo "\$ etcdctl watch --prefix $P/w/ --rev=<first event>   (compacted)"
out=$(timeout 20 "${E[@]}" watch --prefix "$P/w/" --rev="$w1" 2>&1)
rc=$?
echo "$out"
check_eq "watch --rev of a compacted revision ends with an error (not the timeout)" true \
    "$([ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && echo true || echo false)"
check_match "watch --rev of a compacted revision is canceled" \
    'watch was canceled \(etcdserver: mvcc: required revision has been compacted\)' "$out"
expect_fail "etcdserver: mvcc: required revision has been compacted" ectl get "$P/w/a" --rev="$w1"
expect_fail "etcdserver: mvcc: required revision has been compacted" ectl compaction "$w1"
# The compacted revision itself is still readable.
expect_eq "$P/w/b
3
$P/w/ready
ready" ectl get "$P/w/" --prefix --rev="$w4"
expect_fail "etcdserver: mvcc: required revision is a future revision" ectl get "$P/w/b" --rev=9000000000000000000
expect_fail "etcdserver: mvcc: required revision is a future revision" ectl compaction 9000000000000000000

section "all etcdctl checks passed ($NODES nodes)"
