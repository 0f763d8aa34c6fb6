-- policies/default.lua — the policy eventsink ships with.
--
-- It spells out the built-in defaults so that an operator can see them and change them;
-- deleting a hook here brings back the same built-in behaviour. See docs/POLICY_GUIDE.md.
-- Hooks run in a restricted environment: no io, no os beyond time, no require, no debug.

local null = sink.json.null

local function present(v)
    return v ~= nil and v ~= null
end

return {
    -- Which tenant and which kind of event is this?
    describe = function(ev)
        local p = ev.payload
        if type(p) ~= "table" then return nil, nil end
        local event_type = p.event_type
        if not present(event_type) then event_type = p.type end
        return present(p.tenant_id) and p.tenant_id or nil,
               present(event_type) and event_type or nil
    end,

    -- Events with no tenant cannot be journaled: send them to the dead-letter queue.
    route = function(ev, info)
        if info.tenant_id == nil then return "dlq", "missing_tenant" end
        return nil
    end,
}
