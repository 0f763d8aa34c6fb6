-- eventsink runtime: the trusted glue between the C core and the operator's policies.
--
-- The C core loads this file into every policy state before any policy, calls it only
-- through its protected-call helper, and uses the table it returns:
--   new_env()                 a fresh, isolated environment for one policy file
--   install(file, hooks, env) checks one policy file's table and adds its hooks
--   finish()                  called once all files are installed
--   decide(ev, bad_reason)    the decision for one Kafka record (see below)
--   replay_source(req)        the tag for a replay request
--   dlq_retry(entry)          seconds until the next automated retry, or nil
-- Policies never see this table; they see their own environment only.

local json = sink.json
local decode, null = json.decode, json.null
local type, tostring, tonumber, pairs, error, pcall = type, tostring, tonumber, pairs, error, pcall
local setmetatable, getmetatable, rawset = setmetatable, getmetatable, rawset
local tointeger, utf8len, find, format = math.tointeger, utf8.len, string.find, string.format
local base_env = _G

local MAX_NAME = 256

local R = {}

local function present(v)
    return v ~= nil and v ~= null
end

-- A journal id or job id: a positive integer, given as a number or a decimal string.
local function to_id(v)
    if not present(v) then return nil end
    local n = tonumber(v)
    if n == nil or n ~= n or n < 1 or n > 9007199254740991 then return nil end
    return tointeger(n)
end

-- ---- the built-in defaults (CONTRACT section 6) ------------------------------------------

local defaults = {}

function defaults.describe(ev)
    local p = ev.payload
    if type(p) ~= "table" then return nil, nil end
    local tenant = p.tenant_id
    local etype = p.event_type
    if not present(etype) then etype = p.type end
    return present(tenant) and tenant or nil, present(etype) and etype or nil
end

function defaults.detect_replay(ev)
    local p = ev.payload
    if type(p) == "table" then
        local from = to_id(p._replayed_from_event_id)
        local src = p._replay_source
        if from or present(src) or present(p._replayed_from_dlq_id) then
            return present(src) and tostring(src) or "unknown", from
        end
    end
    local h = ev.headers
    if h then
        local from = to_id(h["x-replayed-from-event-id"])
        local src = h["x-replay-source"]
        if from or src or h["x-replayed-from-dlq-id"] then return src or "unknown", from end
    end
    return nil, nil
end

function defaults.route(ev, info)
    if info.tenant_id == nil then return "dlq", "missing_tenant" end
    return nil
end

function defaults.replay_source(req)
    if req.kind == "scheduled" then return "scheduled" end
    if req.kind == "webhook" then return "webhook" end
    if req.automatic then return "automated" end
    return "operator_api"
end

local RETRYABLE = {db_reject = true, policy_error = true}

function defaults.dlq_retry(entry)
    if RETRYABLE[entry.reason] and (entry.attempts or 0) < 5 then
        return 60 * 2 ^ (entry.attempts or 0)
    end
    return nil
end

-- ---- loading -----------------------------------------------------------------------------

local HOOKS = {describe = true, detect_replay = true, route = true, replay_source = true,
               dlq_retry = true}

local hooks = {}      -- name -> function, once finish() has run
local defined_in = {} -- name -> file that defined it
local schedules = {}

function R.new_env()
    -- reads fall through to the sandbox; writes stay in this policy's own table
    return setmetatable({}, {__index = base_env})
end

local function lock(env)
    getmetatable(env).__newindex = function(_, k)
        error(format("assignment to undeclared global '%s' (declare it local)", tostring(k)), 2)
    end
end

function R.install(file, t, env)
    if type(t) ~= "table" then
        error(format("%s: a policy file must return a table of hooks, it returned %s", file, type(t)), 0)
    end
    for k, v in pairs(t) do
        if HOOKS[k] then
            if type(v) ~= "function" then
                error(format("%s: hook '%s' must be a function, not %s", file, k, type(v)), 0)
            end
            if defined_in[k] then
                error(format("%s: hook '%s' is already defined in %s", file, k, defined_in[k]), 0)
            end
            hooks[k], defined_in[k] = v, file
        elseif k == "schedules" then
            if type(v) ~= "table" then
                error(format("%s: 'schedules' must be a table, not %s", file, type(v)), 0)
            end
            if defined_in.schedules then
                error(format("%s: 'schedules' is already defined in %s", file, defined_in.schedules), 0)
            end
            schedules, defined_in.schedules = v, file
        else
            error(format("%s: unknown hook '%s' (known: describe, detect_replay, route, "
                .. "replay_source, dlq_retry, schedules)", file, tostring(k)), 0)
        end
    end
    if env then lock(env) end
end

function R.finish()
    for k in pairs(HOOKS) do
        if not hooks[k] then hooks[k] = defaults[k] end
    end
    return true
end

function R.schedules()
    return schedules
end

-- ---- deciding ----------------------------------------------------------------------------

-- A tenant id or event type: nil, or text of at most MAX_NAME bytes, valid UTF-8, no NUL.
local function name_of(v, what, hook)
    if not present(v) then return nil end
    local tv = type(v)
    if tv == "number" then
        v = tostring(tointeger(v) or v)
    elseif tv ~= "string" then
        error(format("%s returned a %s as %s; expected a string", hook, tv, what), 0)
    end
    if v == "" then return nil end
    if #v > MAX_NAME then
        error(format("%s returned a %s of %d bytes (at most %d)", hook, what, #v, MAX_NAME), 0)
    end
    if not utf8len(v) or find(v, "\0", 1, true) then
        error(format("%s returned a %s that is not valid UTF-8 text", hook, what), 0)
    end
    return v
end

-- The markers that tie a record to a DLQ entry or a replay job: set by eventsink itself
-- when it produces a replay, so they are read here and not by a hook.
local function markers(ev)
    local p, h = ev.payload, ev.headers
    local dlq, job
    if type(p) == "table" then
        dlq, job = to_id(p._replayed_from_dlq_id), to_id(p._replay_job_id)
    end
    if h then
        dlq = dlq or to_id(h["x-replayed-from-dlq-id"])
        job = job or to_id(h["x-replay-job-id"])
    end
    return dlq, job
end

local DLQ_REASONS = {invalid_json = true, invalid_utf8 = true, nul_character = true,
                     too_large = true, missing_tenant = true, policy_error = true,
                     policy_route = true, db_reject = true}

-- Returns tenant_id, event_type, replay_source, replayed_from_event_id, replayed_from_dlq_id,
-- replay_job_id, route ("dlq" or nil), reason, detail.
-- bad_reason is set when the C core already knows the record cannot be journaled
-- (invalid_json, invalid_utf8, nul_character, too_large): only describe runs then, to
-- give the DLQ entry a tenant, and its errors are ignored.
function R.decide(ev, bad_reason)
    if bad_reason then
        if bad_reason == "nul_character" or bad_reason == "too_large" then
            -- valid JSON that cannot be journaled: describe may still read its tenant
            -- (decoding is bounded by the state's memory cap)
            local ok, p = pcall(decode, ev.raw)
            if ok then ev.payload = p end
        end
        local dlq, job = markers(ev)
        local ok, tenant = pcall(hooks.describe, ev)
        if ok then
            ok, tenant = pcall(name_of, tenant, "tenant_id", "describe")
        end
        return ok and tenant or nil, nil, nil, nil, dlq, job, "dlq", bad_reason, nil
    end
    ev.payload = decode(ev.raw)
    local dlq, job = markers(ev)
    local tenant, etype = hooks.describe(ev)
    tenant = name_of(tenant, "tenant_id", "describe")
    etype = name_of(etype, "event_type", "describe")
    local src, from = hooks.detect_replay(ev)
    if src ~= nil and type(src) ~= "string" then
        error(format("detect_replay returned a %s as replay_source; expected a string", type(src)), 0)
    end
    src = name_of(src, "replay_source", "detect_replay")
    if from ~= nil then
        local id = to_id(from)
        if not id then
            error("detect_replay returned " .. tostring(from) .. " as replayed_from_event_id; "
                .. "expected a positive integer", 0)
        end
        from = id
        src = src or "unknown"
    end
    local info = {tenant_id = tenant, event_type = etype, replay_source = src,
                  replayed_from_event_id = from}
    local route, reason = hooks.route(ev, info)
    if route == nil or route == "journal" then
        if tenant == nil then
            -- the journal needs a tenant, whatever the route hook says
            return tenant, etype, src, from, dlq, job, "dlq", "missing_tenant",
                "route sent an event without tenant_id to the journal"
        end
        return tenant, etype, src, from, dlq, job, nil, nil, nil
    elseif route == "dlq" then
        reason = reason ~= nil and tostring(reason) or "policy_route"
        if DLQ_REASONS[reason] then
            return tenant, etype, src, from, dlq, job, "dlq", reason, nil
        end
        return tenant, etype, src, from, dlq, job, "dlq", "policy_route", reason
    end
    error(format("route returned %q; expected nil, \"journal\" or \"dlq\"", tostring(route)), 0)
end

function R.replay_source(req)
    local tag = hooks.replay_source(req)
    return name_of(tag, "replay_source", "replay_source") or defaults.replay_source(req)
end

function R.dlq_retry(entry)
    local s = hooks.dlq_retry(entry)
    if s == nil then return nil end
    if type(s) ~= "number" or s ~= s or s < 0 then
        error("dlq_retry returned " .. tostring(s) .. "; expected seconds (a number >= 0) or nil", 0)
    end
    return s
end

return R
