#!/bin/sh
# The secrets of compose.yaml, fresh and random: `sh scripts/make-env.sh > .env` (once; .env is
# never committed). Hex only, so each value can stand in a database URL as it is.
set -eu
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
echo "ET_JWT_SECRET=$(hex 32)"
echo "MYSQL_ROOT_PASSWORD=$(hex 16)"
echo "MYSQL_PASSWORD=$(hex 16)"
echo "POSTGRES_PASSWORD=$(hex 16)"
echo "GRAFANA_ADMIN_PASSWORD=$(hex 12)"
