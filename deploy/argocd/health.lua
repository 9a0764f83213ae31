-- Argo CD health check for msfcmk.dev/ApplicationEncryption.
--
-- Argo CD runs this with gopher-lua (Lua 5.1): no goto, no integer division, no bit operators.
-- tests/argocd_health.rs runs this file against sample objects; keep the two in step.
--
-- Order of the rules (first match wins):
--   0. being deleted (the finalizer's cleanup runs)      -> Progressing
--   1. no status, or status for an older generation      -> Progressing
--   2. Stalled=True                                       -> Degraded (only a person can fix it)
--   3. Ready=False with a terminal reason (list below)    -> Degraded, even without Stalled
--   4. Ready=False, reason Suspended                      -> Suspended (spec.suspend: a change waits)
--   5. Ready=True, Reconciling not True, generation seen  -> Healthy
--   6. anything else (Reconciling=True, Ready not True)   -> Progressing
--
-- Terminal reasons are those docs/controller.md lists as waiting for a person (a spec or AWS
-- change): the controller stops retrying them until the spec changes or the resync finds a fix.

local TERMINAL = {
  -- refused
  NotPermitted = true, Conflict = true, InvalidSpec = true, RegionUnknown = true,
  OperatorMismatch = true,
  -- the application
  ApplicationNotFound = true, UpdateRolledBack = true, WouldRestartWithoutState = true,
  -- the key
  KeyNotFound = true, KeyDisabled = true, KeyPendingDeletion = true, KeyNotEnabled = true,
  AwsManagedKey = true, KeyNotSymmetric = true, KeyInWrongRegion = true,
  KeyInWrongAccount = true, RuntimeNotSupported = true, CurrentKeyUnusable = true,
  -- the key policy cannot be written safely
  KeyPolicyTooLarge = true, WouldLockOut = true, MalformedKeyPolicy = true,
  KeyPolicyNotFound = true, OperatorRoleUnknown = true, KeyPolicyNotMergeable = true,
  ExplicitDeny = true,
}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

-- A condition written for an older generation says nothing about the current spec.
local function current(obj, c)
  if c == nil then
    return false
  end
  local generation = obj.metadata and obj.metadata.generation
  if generation == nil then
    return true
  end
  local seen = c.observedGeneration or (obj.status and obj.status.observedGeneration)
  return seen ~= nil and seen >= generation
end

local function check(obj)
  local hs = { status = "Progressing", message = "Waiting for the controller" }
  if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
    hs.message = "Deleting: the controller applies spec.deletionPolicy, then removes its finalizer"
    return hs
  end
  if obj.status == nil or obj.status.conditions == nil then
    return hs
  end
  local conditions = obj.status.conditions
  local ready = condition(conditions, "Ready")
  local stalled = condition(conditions, "Stalled")
  local reconciling = condition(conditions, "Reconciling")

  if ready == nil or not current(obj, ready) then
    hs.message = "Waiting for the controller to observe generation " ..
      tostring(obj.metadata and obj.metadata.generation or "?")
    return hs
  end
  if stalled ~= nil and stalled.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(stalled, "Stalled")
    return hs
  end
  if ready.status == "False" and TERMINAL[ready.reason or ""] then
    hs.status = "Degraded"
    hs.message = describe(ready, "NotReady")
    return hs
  end
  if ready.status == "False" and ready.reason == "Suspended" then
    hs.status = "Suspended"
    hs.message = describe(ready, "Suspended")
    return hs
  end
  if ready.status == "True" and not (reconciling ~= nil and reconciling.status == "True") then
    hs.status = "Healthy"
    hs.message = describe(ready, "Ready")
    return hs
  end
  if reconciling ~= nil and reconciling.status == "True" then
    hs.message = describe(reconciling, "Reconciling")
  else
    hs.message = describe(ready, "NotReady")
  end
  return hs
end

return check(obj)
