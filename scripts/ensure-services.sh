#!/usr/bin/env bash
# Make sure the databases the test suite uses answer on 127.0.0.1:
# PostgreSQL 5432 (user postgres, database test) and MariaDB 3306 (root, database test).
# Starts them when they are installed here but down; exits 1 if one stays unreachable.
set -uo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port name seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    if answers "$1"; then echo "$2 answers on 127.0.0.1:$1"; return 0; fi
    sleep 0.1
  done
  echo "$2 does not answer on 127.0.0.1:$1" >&2
  return 1
}

status=0
if ! answers 5432; then
  echo "starting PostgreSQL"
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
wait_for 5432 PostgreSQL 30 || status=1
if ! answers 3306; then
  echo "starting MariaDB"
  if [ -x /usr/sbin/mariadbd ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
fi
wait_for 3306 MariaDB 30 || status=1
exit $status
