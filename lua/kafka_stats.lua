-- eventsink: reads librdkafka's statistics JSON (statistics.interval.ms) for the metrics.
-- Returns a function(json) -> brokers_up (boolean), lags (a list of {topic, partition, lag}).
local decode = sink.json.decode
local type, pairs, tonumber, tointeger = type, pairs, tonumber, math.tointeger

return function(json)
    local s = decode(json)
    local up = false
    for _, b in pairs(s.brokers or {}) do
        -- the bootstrap entries have nodeid -1; a real broker connection counts
        if b.state == "UP" and (b.nodeid or -1) >= 0 then up = true end
    end
    local lags = {}
    for tname, t in pairs(s.topics or {}) do
        for pid, p in pairs(t.partitions or {}) do
            local id = tointeger(tonumber(pid))
            if id and id >= 0 and p.consumer_lag and p.consumer_lag >= 0
                and (p.fetch_state == "active" or p.fetch_state == "paused"
                     or p.fetch_state == "offset-query" or p.fetch_state == "offset-wait") then
                lags[#lags + 1] = {tname, id, p.consumer_lag}
            end
        end
    end
    return up, lags
end
