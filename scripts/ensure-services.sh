#!/usr/bin/env bash
# Starts PostgreSQL, MariaDB and Redis when they are installed here but not listening.
# The Kafka-protocol broker (Tansu) is started by the test fixtures themselves.
# Servers that are not installed are left alone: the suite then skips their legs (or, with
# CI=true, fails them).
set -u

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 30); do listening "$1" && return 0; sleep 0.5; done
  echo "ensure-services: $2 did not come up on port $1" >&2
}

if ! listening 5432 && command -v pg_ctlcluster >/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_for 5432 PostgreSQL
fi
if ! listening 3306 && [ -x /usr/sbin/mariadbd ]; then
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for 3306 MariaDB
fi
if ! listening 6379 && command -v redis-server >/dev/null; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/et-redis.log
  wait_for 6379 Redis
fi
if ! listening 1883 && command -v mosquitto >/dev/null; then
  echo "starting Mosquitto"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_for 1883 Mosquitto
fi
exit 0
