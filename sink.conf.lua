-- sink.conf.lua — the configuration `make demo` runs with (CONTRACT section 2).
-- Every key has a default except postgres.dsn; unknown keys are an error.
-- Relative paths are resolved against this file's folder.
return {
  kafka = {
    -- "embedded" starts librdkafka's mock cluster inside the process (demos only: in
    -- memory, not durable). Point it at your brokers in production: "host1:9092,host2:9092".
    brokers  = os.getenv("EVENTSINK_KAFKA_BROKERS") or "embedded",
    group_id = "eventsink",
    topics   = { "apexflow.leads.created", "^apexflow\\..*" },
    properties = { },
  },
  postgres = {
    -- `make demo` starts a private PostgreSQL on port 55432 (scripts/pg.sh).
    dsn = os.getenv("EVENTSINK_DSN") or "host=127.0.0.1 port=55432 dbname=eventsink user=eventsink",
  },
  http     = { listen = "127.0.0.1:9106" },
  metrics  = { listen = "127.0.0.1:9105" },
  -- POST /webhooks/replay checks HMAC-SHA256 signatures made with this secret
  webhooks = { secret = os.getenv("EVENTSINK_WEBHOOK_SECRET") or "demo-webhook-secret" },
  policies = { "policies/default.lua" },
  batch    = { max_events = 1000, max_wait_ms = 50 },
  replay   = { max_depth = 3, rate_per_s = 1000, max_batch_ids = 10000 },
  log      = { level = "info", format = "text" },
}
