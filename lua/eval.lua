-- eventsink policy-eval: turns one line of a sample file into the parts of a Kafka record.
-- A line is {"topic": "...", "partition": 0, "offset": 0, "key": "...", "headers": {...},
--            "payload": <any JSON, or a string holding the raw bytes>}.
-- Returns topic, partition, offset, key, raw payload, header names, header values.
local decode, encode, null = sink.json.decode, sink.json.encode, sink.json.null
local type, pcall, pairs, tostring, tointeger = type, pcall, pairs, tostring, math.tointeger

return function(line)
    local ok, t = pcall(decode, line)
    if not ok then error("not valid JSON: " .. tostring(t), 0) end
    if type(t) ~= "table" then error("each line must be a JSON object", 0) end
    local topic = t.topic
    if type(topic) ~= "string" then topic = "events" end
    local partition = tointeger(t.partition) or 0
    local offset = tointeger(t.offset) or 0
    local key = t.key
    if key == null then key = nil end
    if key ~= nil then key = tostring(key) end
    local raw
    local p = t.payload
    if type(p) == "string" then
        raw = p
    elseif p == nil then
        raw = ""
    else
        raw = encode(p)
    end
    local names, values = {}, {}
    if type(t.headers) == "table" then
        for k, v in pairs(t.headers) do
            names[#names + 1] = tostring(k)
            values[#values + 1] = (v ~= null) and tostring(v) or false
        end
    end
    return topic, partition, offset, key, raw, names, values
end
