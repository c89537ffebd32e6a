#!/usr/bin/env bash
# Starts PostgreSQL, MariaDB and Redis when they are installed here but not listening, and
# installs Debian's Chromium (the browser tests drive it; Playwright's own download cannot work
# offline) when it is missing and apt-get can install it.
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
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing Chromium for the browser tests"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/tmp/et-chromium-install.log 2>&1 \
    || echo "ensure-services: Chromium did not install (see /tmp/et-chromium-install.log)" >&2
fi
exit 0
