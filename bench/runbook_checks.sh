#!/usr/bin/env bash
# The 60 read-only checks of bench/throughput.py done the way the runbooks do them: curl,
# psql and redis-cli, one after another, each sampled 3 times $INTERVAL s apart (the runbooks'
# `for i in {1..10}; do curl .../health; sleep 2; done`, scaled down as the sandbox scales it).
#   INTERVAL=1 runbook_checks.sh URL DSN REDIS_PORT RELEASE      exit 0 when every check held
set -u
url=$1 dsn=$2 redis_port=$3 release=$4
failed=0

sampled() { # run "$@" 3 times, 0.5 s apart; any failure fails the check
  for i in 1 2 3; do
    "$@" || failed=$((failed + 1))
    [ "$i" -lt 3 ] && sleep "${INTERVAL:-1}"
  done
  return 0
}

health() {
  body=$(curl -fsS --max-time 5 "$url/health") || return 1
  case $body in *'"status":"healthy"'*'"version":"'"$release"'"'*) return 0 ;; esac
  return 1
}

database() {
  out=$(psql "$dsn" -tAc "SELECT pg_is_in_recovery(), count(*) FROM orders") || return 1
  case $out in f\|*) return 0 ;; esac
  return 1
}

cache() { [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping)" = "PONG" ]; }

journey() {
  list=$(curl -fsS --max-time 5 "$url/api/customers?limit=5") || return 1
  id=$(printf '%s' "$list" | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)
  [ -n "$id" ] || return 1
  curl -fsS --max-time 5 "$url/api/customers/$id" >/dev/null || return 1
  curl -fsS --max-time 5 "$url/health/db" | grep -q '"status":"connected"'
}

for _ in $(seq 20); do sampled health; done
for _ in $(seq 20); do sampled database; done
for _ in $(seq 10); do sampled cache; done
for _ in $(seq 10); do sampled journey; done
[ "$failed" -eq 0 ] || { echo "$failed samples failed" >&2; exit 1; }
