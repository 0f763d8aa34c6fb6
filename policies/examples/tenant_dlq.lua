-- policies/examples/tenant_dlq.lua — tenant-specific dead-letter rules.
--
-- Use it instead of default.lua's route (a hook may be defined in one file only):
--   policies = { "policies/examples/tenant_dlq.lua" }
-- describe then takes its built-in default (payload.tenant_id, payload.event_type).

-- Tenants whose events must never reach the journal (test accounts of the CRM).
local SANDBOX_PREFIX = "sandbox-"
-- Tenants whose failed writes are worth retrying for longer (their SLA says so).
local PREMIUM = { acme = true, globex = true }
-- Event types a tenant does not send: anything else is quarantined for a look.
local KNOWN_TYPES = {
    ["lead.created"] = true, ["lead.updated"] = true, ["lead.qualified"] = true,
    ["deal.won"] = true, ["deal.lost"] = true,
}

return {
    route = function(ev, info)
        if info.tenant_id == nil then return "dlq", "missing_tenant" end
        if info.tenant_id:sub(1, #SANDBOX_PREFIX) == SANDBOX_PREFIX then
            return "dlq", "sandbox tenant " .. info.tenant_id
        end
        if info.event_type ~= nil and not KNOWN_TYPES[info.event_type] then
            return "dlq", "unknown event type " .. info.event_type
        end
        return nil
    end,

    -- Seconds until the next automated retry of a DLQ entry, or nil to leave it to an
    -- operator. Premium tenants: 10 attempts, every 5 minutes; others: the default
    -- (60 s doubling, 5 attempts) for db_reject and policy_error only.
    dlq_retry = function(entry)
        if entry.reason ~= "db_reject" and entry.reason ~= "policy_error" then return nil end
        if entry.tenant_id and PREMIUM[entry.tenant_id] then
            if entry.attempts < 10 then return 300 end
            return nil
        end
        if entry.attempts < 5 then return 60 * 2 ^ entry.attempts end
        return nil
    end,
}
