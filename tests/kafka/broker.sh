#!/usr/bin/env bash
# Starts or stops a single-node Apache Kafka broker (KRaft) on loopback for tests.
#   broker.sh start DIR PORT   -> formats DIR, starts the broker, waits until it listens
#     (BROKER_HOST=addr: the clients' listener's address, default 127.0.0.1)
#     A node of a cluster: BROKER_NODE_ID (1), BROKER_VOTERS (the controller quorum,
#     id@127.0.0.1:port,...; default this node alone), BROKER_RF (the internal topics'
#     replication factor, 1), BROKER_MIN_ISR (min.insync.replicas, 1). Nodes of a cluster
#     are started together: each listens once a majority of the controllers is up.
#   broker.sh stop DIR
# Jars come from Maven Central through tests/kafka/pom.xml (cached in tests/kafka/lib).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?start|stop}
dir=${2:?data dir}

fetch() {
  if [ ! -f "$here/lib/.complete" ]; then
    (cd "$here" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
    touch "$here/lib/.complete"
  fi
}

case "$cmd" in
fetch) fetch ;;
start)
  port=${3:?port}
  ctl=$((port + 1))
  host=${BROKER_HOST:-127.0.0.1}
  node=${BROKER_NODE_ID:-1}
  voters=${BROKER_VOTERS:-$node@127.0.0.1:$ctl}
  rf=${BROKER_RF:-1}
  isr=${BROKER_MIN_ISR:-1}
  fetch
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=PLAINTEXT://$host:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/logs
num.partitions=4
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
default.replication.factor=$rf
min.insync.replicas=$isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
PROPS
  cat >"$dir/log4j.properties" <<'L4J'
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
L4J
  cp="$here/lib/*"
  jopts=(-Xms256m -Xmx512m -XX:+UseG1GC -Dkafka.logs.dir="$dir" -Dlog4j.configuration="file:$dir/log4j.properties")
  if [ ! -f "$dir/logs/meta.properties" ]; then
    java "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format -t "eventsink-test-cluster-0001" -c "$dir/server.properties" >"$dir/format.log" 2>&1
  fi
  nohup java "${jopts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 120); do
    if (exec 3<>/dev/tcp/"$host"/"$port") 2>/dev/null; then exit 0; fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "kafka broker exited; see $dir/stdout.log" >&2; tail -20 "$dir/stdout.log" >&2; exit 1
    fi
    sleep 0.5
  done
  echo "kafka broker did not listen on $port" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  ;;
*) echo "usage: $0 start DIR PORT | stop DIR | fetch" >&2; exit 2 ;;
esac
