#!/bin/bash
# MariaDB standing in for mysql:8: the official image's MYSQL_* variables, applied at each start.
set -euo pipefail
if [ ! -d /var/lib/mysql/mysql ]; then
  chown -R mysql: /var/lib/mysql
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
fi
sql() { printf "%s" "$1" | sed "s/'/''/g"; }
cat >/run/mysqld/init.sql <<SQL
CREATE DATABASE IF NOT EXISTS \`${MYSQL_DATABASE}\`;
CREATE USER IF NOT EXISTS '${MYSQL_USER}'@'%' IDENTIFIED BY '$(sql "$MYSQL_PASSWORD")';
ALTER USER '${MYSQL_USER}'@'%' IDENTIFIED BY '$(sql "$MYSQL_PASSWORD")';
GRANT ALL ON \`${MYSQL_DATABASE}\`.* TO '${MYSQL_USER}'@'%';
ALTER USER 'root'@'localhost' IDENTIFIED BY '$(sql "$MYSQL_ROOT_PASSWORD")';
SQL
chown mysql: /run/mysqld/init.sql && chmod 600 /run/mysqld/init.sql
exec mariadbd --user=mysql --bind-address=0.0.0.0 --init-file=/run/mysqld/init.sql
