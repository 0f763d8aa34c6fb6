-- policies/examples/off_hours.lua — bulk replays only off business hours, and a nightly
-- retry of what ended in the dead-letter queue.
--
-- Load it beside the default policy (it defines no hook that default.lua defines):
--   policies = { "policies/default.lua", "policies/examples/off_hours.lua" }
-- Times are in scheduler.timezone (sink.conf.lua), UTC by default.

-- Business hours: bulk replays during them are deferred to the end of the window, unless
-- they are small. Change these three numbers to suit.
local BUSINESS_START_HOUR = 8    -- 08:00
local BUSINESS_END_HOUR = 20     -- 20:00
local SMALL_REPLAY = 100         -- events; smaller bulk replays run at once

local function seconds_until_hour(t, hour)
    local s = (hour - t.hour) * 3600 - t.min * 60 - t.sec
    if s <= 0 then s = s + 86400 end
    return s
end

return {
    -- May a bulk replay (batch, range, filtered DLQ retry, webhook, schedule) run now?
    replay_guard = function(req)
        local t = os.date("*t")
        local busy = t.hour >= BUSINESS_START_HOUR and t.hour < BUSINESS_END_HOUR
            and t.wday ~= 1 and t.wday ~= 7     -- Sunday is 1, Saturday 7
        if not busy or req.kind == "scheduled" then return "allow" end
        if req.count and req.count >= 0 and req.count < SMALL_REPLAY then return "allow" end
        return "defer", seconds_until_hour(t, BUSINESS_END_HOUR)
    end,

    schedules = {
        -- every night at 02:30: retry what the last 24 hours dead-lettered as db_reject
        -- on the leads topic (fixed tables, a deployment rolled back, ...)
        {
            name = "nightly-dlq-retry",
            cron = "30 2 * * *",
            action = "dlq_retry",
            params = { window = "24h", reason = "db_reject", topic = "apexflow.leads.created" },
        },
        -- every Sunday at 03:00: replay last week's original lead events to the topic, for
        -- the downstream systems that rebuild their state weekly
        {
            name = "weekly-leads-replay",
            cron = "0 3 * * sun",
            action = "replay_range",
            params = { window = "7d", topic = "apexflow.leads.created", rate_per_s = 200 },
        },
    },
}
