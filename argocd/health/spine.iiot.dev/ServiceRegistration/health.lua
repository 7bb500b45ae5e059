-- Argo CD health check of spine.iiot.dev/ServiceRegistration (README.md, "Argo CD": add it to argocd-cm as
-- resource.customizations.health.spine.iiot.dev_ServiceRegistration). Runs on Argo CD's gopher-lua (Lua 5.1)
-- without the string library: only base functions and table. Healthy: Ready=True at the current
-- generation; Progressing: the operator has not caught up, the resource is being deleted, or it
-- waits for something that comes by itself; Degraded: a person must act (the message says why).
-- Every kind shares this body: `make chart` writes it from argocd/health/health.lua.in.
-- Reasons of Ready=False that only a person can clear (conditions.py; the README's tables).
local NEEDS_A_HUMAN = {
  InvalidSpec = true,
  InvalidReference = true,
  DuplicateSpine = true,
  ApplyFailed = true,
  VolumeExpansionUnsupported = true,
  VolumeShrinkRefused = true,
  VolumeClaimImmutable = true,
}
-- Reasons that clear by themselves once a child or a dependency is ready (as in one Argo CD
-- sync that applies the Spine, its TwinModels and Gateways together).
local WAITING = {
  Progressing = true,
  SpineNotFound = true,
  DependencyNotFound = true,
  DependencyNotReady = true,
  BrokerStarting = true,
  TwinStarting = true,
  VolumeExpanding = true,
}

local function find(conditions, wanted)
  for _, item in ipairs(conditions) do
    if item.type == wanted then
      return item
    end
  end
  return nil
end

local function explain(item)
  local text = item.type .. "=" .. tostring(item.status)
  if item.reason ~= nil and item.reason ~= "" then
    text = text .. " (" .. item.reason .. ")"
  end
  if item.message ~= nil and item.message ~= "" then
    text = text .. ": " .. item.message
  end
  return text
end

local function result(status, message)
  return { status = status, message = message }
end

local function health(resource)
  local metadata = resource.metadata or {}
  local generation = metadata.generation
  if metadata.deletionTimestamp ~= nil then
    return result("Progressing", "Being deleted")
  end
  local status = resource.status
  if status == nil or status.conditions == nil then
    return result("Progressing", "Waiting for the Spine operator to report a status")
  end
  if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
    return result("Progressing", "Waiting for the Spine operator to reconcile generation " .. tostring(generation))
  end
  local conditions = status.conditions
  local ready = find(conditions, "Ready")
  if ready == nil then
    return result("Progressing", "Waiting for the Ready condition")
  end
  if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
    return result("Progressing", "Waiting for the Spine operator to reconcile generation " .. tostring(generation))
  end
  local degraded = find(conditions, "Degraded")
  if ready.status == "False" then
    if NEEDS_A_HUMAN[ready.reason] then
      return result("Degraded", explain(ready))
    end
    if degraded ~= nil and degraded.status == "True" then
      return result("Degraded", explain(degraded))
    end
    if WAITING[ready.reason] then
      return result("Progressing", explain(ready))
    end
    -- A reason this script does not know yet: say it rather than hide it.
    return result("Degraded", explain(ready))
  end
  if ready.status ~= "True" then
    return result("Progressing", explain(ready))
  end
  if degraded ~= nil and degraded.status == "True" then
    return result("Degraded", explain(degraded))
  end
  local connected = find(conditions, "Connected")
  if connected ~= nil and connected.status == "False" then
    return result("Degraded", explain(connected))
  end
  local persistence = find(conditions, "PersistenceSynced")
  if persistence ~= nil and persistence.status == "False" then
    if NEEDS_A_HUMAN[persistence.reason] then
      return result("Degraded", explain(persistence))
    end
    return result("Progressing", explain(persistence))
  end
  return result("Healthy", explain(ready))
end

return health(obj)
