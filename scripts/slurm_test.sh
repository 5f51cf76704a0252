#!/usr/bin/env bash
# `latentface batch --shard` on a real Slurm cluster of one node (docs/batch.md, "Slurm job
# array"): installs Debian's slurm-wlm + munge when missing, starts munged, slurmctld and
# slurmd on loopback with their own config, sockets, state and spool under a temporary
# folder (nothing in /etc is changed), submits a 4-task job array over a 20-job manifest,
# cancels one task part-way (scancel: SIGTERM, as Slurm sends it), requeues it, waits, and
# checks that every job ran exactly once with valid outputs and one summary per shard.
#
#   scripts/slurm_test.sh          (called by scripts/test.sh; SKIP_SLURM=1 skips it)
#
# Skips (exit 0, saying why) only when not root or when apt-get is unavailable: the
# daemons must run as root and the packages come from Debian.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

T0=$(date +%s)
say() { echo "slurm_test [$(($(date +%s) - T0)) s]: $*"; }
fail() { echo "slurm_test: FAILED: $*" >&2; exit 1; }

if [[ "$(id -u)" != "0" ]]; then
    say "SKIPPED: not root (slurmctld/slurmd must run as root to launch jobs)"
    exit 0
fi
need=()
command -v slurmctld >/dev/null && command -v sbatch >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
    if ! command -v apt-get >/dev/null; then
        say "SKIPPED: ${need[*]} missing and apt-get unavailable (not a Debian-like system)"
        exit 0
    fi
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi


cargo build --release --quiet --bin latentface
BIN="${CARGO_TARGET_DIR:-${ROOT}/target}/release/latentface"
ORT="${LATENTFACE_ORT_LIB:-${ROOT}/.deps/onnxruntime/libonnxruntime.so.1.31.1}"
[[ -x "${BIN}" ]] || fail "no binary at ${BIN}"
[[ -f "${ORT}" ]] || fail "no ONNX Runtime at ${ORT} (run scripts/setup.sh)"

W="$(mktemp -d /tmp/latentface-slurm.XXXXXX)"
chmod 755 "${W}"
PIDS=()
cleanup() {
    local rc=$?
    [[ -n "${SLURM_CONF:-}" ]] && scancel --quiet --user=root 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "${p}" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "${p}" 2>/dev/null || true; done
    if [[ ${rc} -ne 0 ]]; then
        echo "--- daemon logs (${W}) ---" >&2
        tail -n 30 "${W}"/log/*.log >&2 2>/dev/null || true
        tail -n 20 "${W}"/logs/*.out >&2 2>/dev/null || true
    else
        rm -rf "${W}"
    fi
}
trap cleanup EXIT

# --- munge, on its own key and socket ---
mkdir -p "${W}/munge" "${W}/log" "${W}/state" "${W}/spool" "${W}/logs" "${W}/run"
chmod 700 "${W}/munge"
dd if=/dev/urandom of="${W}/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "${W}/munge/munge.key"
munged --foreground --force --socket="${W}/munge/munge.sock" --key-file="${W}/munge/munge.key" \
    --pid-file="${W}/munge/munged.pid" --log-file="${W}/log/munged.log" \
    --seed-file="${W}/munge/munged.seed" 2>>"${W}/log/munged.log" &
PIDS+=($!)

# --- a one-node cluster on loopback ---
HOST="$(hostname -s)"
export SLURM_CONF="${W}/slurm.conf"
cat >"${SLURM_CONF}" <<EOF
ClusterName=latentface-test
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${W}/munge/munge.sock
StateSaveLocation=${W}/state
SlurmdSpoolDir=${W}/spool
SlurmctldPidFile=${W}/run/slurmctld.pid
SlurmdPidFile=${W}/run/slurmd.pid
SlurmctldLogFile=${W}/log/slurmctld.log
SlurmdLogFile=${W}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
SchedulerParameters=sched_interval=1
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i -f "${SLURM_CONF}" 2>>"${W}/log/slurmctld.log" &
PIDS+=($!)
slurmd -D -N "${HOST}" -f "${SLURM_CONF}" 2>>"${W}/log/slurmd.log" &
PIDS+=($!)
for _ in $(seq 1 60); do
    state="$(sinfo -h -n "${HOST}" -o %T 2>/dev/null || true)"
    [[ "${state}" == idle* ]] && break
    sleep 0.5
done
[[ "${state:-}" == idle* ]] || fail "node ${HOST} did not come up idle (state: '${state:-none}')"
say "cluster up ($(sinfo --version), $(munged --version 2>&1 | awk '{print $1; exit}')): node ${HOST} idle, partition test"

# --- 20 family jobs: a photo parent (inverted for every job: no cache) and a latent ---
D="${W}/data"
mkdir -p "${D}"
run_lf() { "${BIN}" --bundle "${ROOT}/onnx/tiny" --device cpu --ort-lib "${ORT}" --threads 1 "$@"; }
run_lf generate --seed 11 -o "${D}/anna.png" --save-latent "${D}/anna.npy" >/dev/null 2>&1 || fail "latentface generate failed"
run_lf generate --seed 12 -o "${D}/ben.png" --save-latent "${D}/ben.npy" >/dev/null 2>&1 || fail "latentface generate failed"
NJOBS=20
NSHARDS=4
{
    for i in $(seq -w 0 $((NJOBS - 1))); do
        printf '[[jobs]]\nid = "fam-%s"\nkind = "family"\nparent_a = "anna.png"\nparent_b = "ben.npy"\n' "$i"
        printf 'output = "out/fam-%s"\nseed = %d\nchildren = 2\nsteps = 300\nalign = false\n\n' "$i" "$((10#$i))"
    done
} >"${D}/jobs.toml"
STATE="${D}/jobs.state"

# shard(id) = first 8 bytes of sha256(id), big-endian, mod N; for N = 4 only the last of
# those bytes matters (2^8 is a multiple of 4), which keeps this in bash arithmetic.
shard_of() { local h; h="$(printf %s "$1" | sha256sum | cut -c15-16)"; echo $((16#${h} % NSHARDS)); }
declare -A SHARD
for i in $(seq -w 0 $((NJOBS - 1))); do SHARD["fam-$i"]=$(shard_of "fam-$i"); done

cat >"${D}/array.sh" <<EOF
#!/usr/bin/env bash
echo "task \${SLURM_ARRAY_TASK_ID} of job \${SLURM_ARRAY_JOB_ID} on \$(hostname) (restart \${SLURM_RESTART_COUNT:-0})"
exec "${BIN}" --bundle "${ROOT}/onnx/tiny" --device cpu --ort-lib "${ORT}" --threads 1 \\
    batch "${D}/jobs.toml" --shard "\${SLURM_ARRAY_TASK_ID}/${NSHARDS}" --jobs 1 --no-cache
EOF
chmod +x "${D}/array.sh"
JOB="$(sbatch --parsable --array=0-$((NSHARDS - 1)) --cpus-per-task=1 --requeue \
    --open-mode=append --output="${W}/logs/task-%a.out" --chdir="${D}" "${D}/array.sh")"
JOB="${JOB%%;*}"
say "submitted array job ${JOB} (tasks 0-$((NSHARDS - 1)), ${NJOBS} jobs)"

# --- cancel one task part-way: once one of its jobs is done and before all are ---
VICTIM=2
victim_ids=()
for id in "${!SHARD[@]}"; do [[ ${SHARD[$id]} == "${VICTIM}" ]] && victim_ids+=("${id}"); done
((${#victim_ids[@]} >= 2)) || fail "shard ${VICTIM} has ${#victim_ids[@]} jobs; need 2 or more to cancel part-way"
done_in_victim() {
    local n=0 id
    for id in "${victim_ids[@]}"; do
        compgen -G "${STATE}/${id}-*.done" >/dev/null && n=$((n + 1))
    done
    echo "${n}"
}
deadline=$(($(date +%s) + 90))
while (($(done_in_victim) < 1)); do
    (($(date +%s) < deadline)) || fail "task ${VICTIM} finished no job in 90 s"
    sleep 0.1
done
done_at_cancel=$(done_in_victim)
((done_at_cancel < ${#victim_ids[@]})) || fail "task ${VICTIM} finished all its jobs before the cancel: the test proves nothing"
scancel "${JOB}_${VICTIM}"
say "scancel ${JOB}_${VICTIM} with ${done_at_cancel} of ${#victim_ids[@]} of its jobs done"
deadline=$(($(date +%s) + 60))
until [[ "$(scontrol show job "${JOB}_${VICTIM}" 2>/dev/null | grep -o 'JobState=[A-Z_]*')" == JobState=CANCELLED ]]; do
    (($(date +%s) < deadline)) || fail "task ${VICTIM} not cancelled within 60 s"
    sleep 0.2
done
SUMV="${STATE}/summary-shard-${VICTIM}-of-${NSHARDS}.json"
[[ -f "${SUMV}" ]] || fail "the cancelled task wrote no summary (${SUMV})"
cancelled=$(jq '[.jobs[] | select(.status == "cancelled")] | length' "${SUMV}")
((cancelled >= 1)) || fail "the cancelled task's summary lists no cancelled job: $(jq -c '[.jobs[].status]' "${SUMV}")"
jq -e '[.jobs[] | select(.status == "failed")] | length == 0' "${SUMV}" >/dev/null ||
    fail "the cancelled task recorded failed jobs: $(jq -c '.jobs' "${SUMV}")"
grep -q "interrupt" "${W}/logs/task-${VICTIM}.out" || fail "task ${VICTIM}'s log does not show the interrupt"
ok_at_cancel=$(jq '.ok' "${SUMV}")
say "task ${VICTIM} stopped on SIGTERM: summary lists ${ok_at_cancel} ok, ${cancelled} cancelled, none failed"

if scontrol requeue "${JOB}_${VICTIM}" 2>"${W}/log/requeue.err"; then
    # slurmctld holds a requeued job back (begin time about 2 minutes ahead); let it start now.
    scontrol update JobId="${JOB}_${VICTIM}" StartTime=now
    say "scontrol requeue ${JOB}_${VICTIM}: $(scontrol show job "${JOB}_${VICTIM}" | grep -o 'JobState=[A-Z_]* Reason=[^ ]*') $(scontrol show job "${JOB}_${VICTIM}" | grep -o 'StartTime=[^ ]*')"
else
    say "scontrol requeue refused ($(cat "${W}/log/requeue.err")); resubmitting task ${VICTIM}"
    sbatch --parsable --array="${VICTIM}" --cpus-per-task=1 --open-mode=append \
        --output="${W}/logs/task-%a.out" --chdir="${D}" "${D}/array.sh" >/dev/null
fi

# --- wait for the whole array ---
deadline=$(($(date +%s) + 150))
while [[ -n "$(squeue -h -o %i 2>/dev/null)" ]]; do
    (($(date +%s) < deadline)) || fail "jobs still queued after 150 s: $(squeue -h)"
    sleep 0.5
done
for t in $(seq 0 $((NSHARDS - 1))); do
    st="$(scontrol show job "${JOB}_${t}" 2>/dev/null | grep -o 'JobState=[A-Z_]* .*' | head -1 || true)"
    grep -q "^JobState=COMPLETED" <<<"${st}" || fail "task ${t} did not complete: ${st:-no record}"
    grep -q "ExitCode=0:0" <<<"$(scontrol show job "${JOB}_${t}")" || fail "task ${t} exit code not 0"
done
say "all ${NSHARDS} tasks COMPLETED with exit 0"

# --- every job exactly once, in its shard, with valid outputs ---
for t in $(seq 0 $((NSHARDS - 1))); do
    f="${STATE}/summary-shard-${t}-of-${NSHARDS}.json"
    [[ -f "${f}" ]] || fail "no summary for shard ${t}"
    jq -e ".shard == \"${t}/${NSHARDS}\" and .jobs_in_manifest == ${NJOBS} and .failed == 0 and .cancelled == 0" "${f}" >/dev/null ||
        fail "shard ${t} summary: $(jq -c '{shard, jobs_in_manifest, ok, skipped, failed, cancelled}' "${f}")"
done
nsum=$(find "${STATE}" -name 'summary*.json' | wc -l)
((nsum == NSHARDS)) || fail "${nsum} summaries for ${NSHARDS} shards"
for id in "${!SHARD[@]}"; do
    s="${SHARD[$id]}"
    # Listed in its own shard's summary only, once.
    for t in $(seq 0 $((NSHARDS - 1))); do
        n=$(jq --arg id "${id}" '[.jobs[] | select(.id == $id)] | length' "${STATE}/summary-shard-${t}-of-${NSHARDS}.json")
        want=0; [[ ${t} == "${s}" ]] && want=1
        ((n == want)) || fail "${id} (shard ${s}) listed ${n} times in shard ${t}'s summary"
    done
    # Run to completion exactly once over all runs (the tasks' logs, appended across the
    # requeue, hold every run's table: `ok` = ran to completion, `skipped` = already done).
    runs=$(cat "${W}"/logs/task-*.out | grep -cE "^${id} +family +ok " || true)
    ((runs == 1)) || fail "${id} ran to completion ${runs} times"
    markers=$(compgen -G "${STATE}/${id}-*.done" | wc -l)
    ((markers == 1)) || fail "${id}: ${markers} .done markers"
    jq -e --arg id "${id}" '.id == $id and (.outputs | length) > 0' "${STATE}/${id}"-*.done >/dev/null ||
        fail "${id}: bad .done marker"
    while read -r out; do
        [[ -s "${out}" ]] || fail "${id}: output ${out} missing or empty"
        case "${out}" in
        *.png) [[ "$(head -c 8 "${out}" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] || fail "${id}: ${out} is not a PNG" ;;
        *.json) jq -e . "${out}" >/dev/null || fail "${id}: ${out} is not JSON" ;;
        *.npy) [[ "$(head -c 6 "${out}" | tail -c 5)" == NUMPY ]] || fail "${id}: ${out} is not .npy" ;;
        esac
    done < <(jq -r '.outputs[]' "${STATE}/${id}"-*.done)
    [[ -s "${D}/out/${id}/family.png" && -s "${D}/out/${id}/child_02.png" ]] || fail "${id}: family sheet or child missing"
done
resumed=$(jq '.skipped' "${SUMV}")
((resumed == ok_at_cancel)) || fail "requeued task ${VICTIM} skipped ${resumed} jobs; the cancelled run had finished ${ok_at_cancel}"
say "checked: ${NJOBS} jobs each in its own shard's summary once, completed once (log tables), one .done marker each, outputs non-empty and well-formed; ${NSHARDS} summaries; requeued task ${VICTIM} skipped its ${resumed} finished jobs and ran the rest"
say "passed"
