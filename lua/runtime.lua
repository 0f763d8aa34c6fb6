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
local type, tostring, tonumber, pairs, ipairs, error, pcall =
    type, tostring, tonumber, pairs, ipairs, error, pcall
local setmetatable, rawset, load = setmetatable, rawset, load
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
            -- a tag is text: a table or boolean here says nothing useful
            local t = type(src)
            return (t == "string" or t == "number") and tostring(src) or "unknown", from
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

-- An addition to the contract's hooks: may a bulk replay (batch, range, filtered DLQ retry,
-- webhook, schedule) run now? nil or "allow"; "refuse", reason; "defer", seconds.
function defaults.replay_guard(req)
    return nil
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
               dlq_retry = true, replay_guard = true}

local check_schedules -- defined below
local hooks = {}      -- name -> function, once finish() has run
local defined_in = {} -- name -> file that defined it
local schedules = {}

local ACTIONS = {replay_range = true, dlq_retry = true}
local SCHEDULE_KEYS = {name = true, cron = true, action = true, params = true}

check_schedules = function(file, list)
    local seen = {}
    for i, sch in pairs(list) do
        local where = format("%s: schedules[%s]", file, tostring(i))
        if type(i) ~= "number" then error(where .. ": schedules must be a list", 0) end
        if type(sch) ~= "table" then error(where .. ": must be a table {name=, cron=, action=, params=}", 0) end
        for k in pairs(sch) do
            if not SCHEDULE_KEYS[k] then error(format("%s: unknown key '%s'", where, tostring(k)), 0) end
        end
        if type(sch.name) ~= "string" or sch.name == "" then error(where .. ": name must be a non-empty string", 0) end
        if seen[sch.name] then error(format("%s: the name '%s' is used twice", where, sch.name), 0) end
        seen[sch.name] = true
        if type(sch.cron) ~= "string" then error(where .. ": cron must be a string like \"0 2 * * *\"", 0) end
        if not ACTIONS[sch.action] then
            error(format("%s: action must be \"replay_range\" or \"dlq_retry\", not %s", where, tostring(sch.action)), 0)
        end
        if sch.params ~= nil and type(sch.params) ~= "table" then error(where .. ": params must be a table", 0) end
    end
end

-- Each policy file gets an environment of its own: a copy of the sandbox's globals whose
-- library tables (string, table, math, sink, sink.json, ...) are copies too, so that no
-- file can change what another file, or this runtime, sees. `_G` is the file's own table,
-- and `load` defaults to it. The copies are shallow: the functions are the same.
local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
end

local env_mt = setmetatable({}, {__mode = "k"}) -- env -> its metatable

function R.new_env()
    local env, lib = {}, {}
    for k, v in pairs(base_env) do
        if type(v) == "table" and v ~= base_env then v = copy(v) end
        lib[k] = v
    end
    lib.sink.json = copy(base_env.sink.json)
    lib._G = env
    lib.load = function(chunk, name, mode, e)
        if e == nil then e = env end
        return load(chunk, name, mode, e)
    end
    -- reads fall through to the file's own copy of the sandbox; writes stay in env
    local mt = {__index = lib, __metatable = false}
    env_mt[env] = mt
    return setmetatable(env, mt)
end

local function lock(env)
    env_mt[env].__newindex = function(_, k)
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
            check_schedules(file, v)
            schedules, defined_in.schedules = v, file
        else
            error(format("%s: unknown hook '%s' (known: describe, detect_replay, route, "
                .. "replay_source, dlq_retry, replay_guard, schedules)", file, tostring(k)), 0)
        end
    end
    if env then lock(env) end
end

-- Returns true when describe, detect_replay and route are all the built-in defaults:
-- the C core then decides records without calling Lua (src/policy_fast.c, the same rules).
function R.finish()
    for k in pairs(HOOKS) do
        if not hooks[k] then hooks[k] = defaults[k] end
    end
    return hooks.describe == defaults.describe and hooks.detect_replay == defaults.detect_replay
        and hooks.route == defaults.route
end

-- The schedules as plain values for the C core: a list of {name, cron, action,
-- params as JSON}, and the file that defined them.
function R.schedule_list()
    local out = {}
    for _, sch in ipairs(schedules) do
        out[#out + 1] = {sch.name, sch.cron, sch.action, json.encode(sch.params or {})}
    end
    return out, defined_in.schedules
end

-- ---- deciding ----------------------------------------------------------------------------

-- "describe (policies/x.lua)": the hook and the file that defined it, for error messages.
local function hook_where(hook)
    local file = defined_in[hook]
    return file and format("%s (%s)", hook, file) or hook
end

-- A tenant id or event type: nil, or text of at most MAX_NAME bytes, valid UTF-8, no NUL.
local function name_of(v, what, hook)
    if not present(v) then return nil end
    local tv = type(v)
    if tv == "number" then
        v = tostring(tointeger(v) or v)
    elseif tv ~= "string" then
        error(format("%s returned a %s as %s; expected a string", hook_where(hook), tv, what), 0)
    end
    if v == "" then return nil end
    if #v > MAX_NAME then
        error(format("%s returned a %s of %d bytes (at most %d)", hook_where(hook), what, #v,
            MAX_NAME), 0)
    end
    if not utf8len(v) or find(v, "\0", 1, true) then
        error(format("%s returned a %s that is not valid UTF-8 text", hook_where(hook), what), 0)
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

local decide_after_describe -- below

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
    -- what describe decided stays with the DLQ entry when a later hook fails
    local ok, a, b, c, d, e, f, g, h, i = pcall(decide_after_describe, ev, tenant, etype, dlq, job)
    if not ok then
        return tenant, etype, nil, nil, dlq, job, "dlq", "policy_error", tostring(a)
    end
    return a, b, c, d, e, f, g, h, i
end

-- detect_replay and route, for an event describe has named.
function decide_after_describe(ev, tenant, etype, dlq, job)
    local src, from = hooks.detect_replay(ev)
    if src ~= nil and type(src) ~= "string" then
        error(format("%s returned a %s as replay_source; expected a string",
            hook_where("detect_replay"), type(src)), 0)
    end
    src = name_of(src, "replay_source", "detect_replay")
    if from ~= nil then
        local id = to_id(from)
        if not id then
            error(hook_where("detect_replay") .. " returned " .. tostring(from)
                .. " as replayed_from_event_id; expected a positive integer", 0)
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
    error(format("%s returned %q; expected nil, \"journal\" or \"dlq\"", hook_where("route"),
        tostring(route)), 0)
end

function R.replay_source(req)
    local tag = hooks.replay_source(req)
    return name_of(tag, "replay_source", "replay_source") or defaults.replay_source(req)
end

-- Returns "allow", "refuse" with a reason, or "defer" with seconds.
function R.replay_guard(req)
    local verdict, arg = hooks.replay_guard(req)
    if verdict == nil or verdict == true or verdict == "allow" then return "allow" end
    if verdict == false or verdict == "refuse" then
        return "refuse", arg ~= nil and tostring(arg) or "refused by the replay_guard policy"
    end
    if verdict == "defer" then
        if type(arg) ~= "number" or arg ~= arg or arg < 0 then
            error(hook_where("replay_guard") .. " returned \"defer\" without a number of seconds", 0)
        end
        return "defer", arg
    end
    error(hook_where("replay_guard") .. " returned " .. tostring(verdict)
        .. "; expected nil, \"allow\", \"refuse\" or \"defer\"", 0)
end

function R.dlq_retry(entry)
    local s = hooks.dlq_retry(entry)
    if s == nil then return nil end
    if type(s) ~= "number" or s ~= s or s < 0 then
        error(hook_where("dlq_retry") .. " returned " .. tostring(s)
            .. "; expected seconds (a number >= 0) or nil", 0)
    end
    return s
end

-- ---- the reload self-test ------------------------------------------------------------

-- Every hook runs on these before a policy set is accepted; a hook that raises on them, or
-- returns the wrong types, refuses the whole set (the running one stays).
local SAMPLE_EVENTS = {
    {raw = '{"tenant_id":"acme","event_type":"lead.created","lead":{"id":"L-1","email":"ada@example.com","score":42}}'},
    {raw = '{"tenant_id":"acme","event_type":"lead.updated","lead":{"id":"L-1"},'
        .. '"_replayed_from_event_id":1,"_replay_source":"operator_api","_replay_job_id":1}'},
    {raw = '{"tenant_id":"globex","type":"deal.won","deal":{"id":"D-9","amount":1200.5}}',
     headers = {["x-replayed-from-event-id"] = "2", ["x-replay-source"] = "scheduled"}},
    {raw = '{"event_type":"lead.created","lead":{"id":"L-2"}}'},
}
local SAMPLE_REQUESTS = {
    {kind = "single", requested_by = "self-test", reason = "self-test", automatic = false},
    {kind = "range", requested_by = "self-test", automatic = false},
    {kind = "scheduled", requested_by = "nightly", automatic = true},
    {kind = "dlq_retry", requested_by = "automated", automatic = true},
    {kind = "webhook", requested_by = "webhook", automatic = false},
}
local SAMPLE_ENTRIES = {
    {id = 1, reason = "db_reject", attempts = 0, topic = "apexflow.leads.created", tenant_id = "acme"},
    {id = 2, reason = "policy_error", attempts = 5, topic = "apexflow.leads.created"},
    {id = 3, reason = "invalid_json", attempts = 0, topic = "apexflow.leads.created"},
}

function R.self_test()
    for i, sample in ipairs(SAMPLE_EVENTS) do
        local ev = {topic = "apexflow.leads.created", partition = 0, offset = i, key = "lead-" .. i,
                    timestamp_ms = 0, raw = sample.raw, headers = sample.headers}
        local ok, err = pcall(R.decide, ev, nil)
        if not ok then error(format("self-test on sample event %d: %s", i, tostring(err)), 0) end
    end
    for _, req in ipairs(SAMPLE_REQUESTS) do
        local ok, err = pcall(R.replay_source, req)
        if not ok then error(format("self-test of replay_source (%s): %s", req.kind, tostring(err)), 0) end
    end
    for _, req in ipairs(SAMPLE_REQUESTS) do
        req.count = 100
        local ok, err = pcall(R.replay_guard, req)
        if not ok then error(format("self-test of replay_guard (%s): %s", req.kind, tostring(err)), 0) end
    end
    for _, entry in ipairs(SAMPLE_ENTRIES) do
        local ok, err = pcall(R.dlq_retry, entry)
        if not ok then error(format("self-test of dlq_retry (%s): %s", entry.reason, tostring(err)), 0) end
    end
    return true
end

return R
