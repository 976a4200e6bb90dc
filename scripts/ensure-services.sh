#!/usr/bin/env bash
# Makes sure the engines idem's tests run against are up on this machine:
# PostgreSQL :5432, MariaDB :3306, Redis :6379, RabbitMQ :5672, NATS :4222.
# Starts any that is down with the machine's own start command, then waits
# (bounded) for each port to accept connections.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local name=$1 port=$2; shift 2
  if port_open "$port"; then return 0; fi
  echo "ensure-services: $name is down on :$port, starting it"
  "$@" >/dev/null 2>&1 || echo "ensure-services: start command for $name returned $?"
}

start postgresql 5432 bash -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
start mariadb 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
start redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start rabbitmq 5672 rabbitmq-server -detached
start nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log

# RabbitMQ can take a while to boot; everything else is quick.
for spec in postgresql:5432 mariadb:3306 redis:6379 rabbitmq:5672 nats:4222; do
  name=${spec%%:*}; port=${spec##*:}
  for _ in $(seq 1 120); do port_open "$port" && break; sleep 1; done
  port_open "$port" || { echo "ensure-services: $name did not come up on :$port" >&2; exit 1; }
done
echo "ensure-services: postgresql, mariadb, redis, rabbitmq and nats are up"
