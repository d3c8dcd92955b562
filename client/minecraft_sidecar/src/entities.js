'use strict'
// Entity naming and classification shared by observe, skills, reflexes and watch mode.

const HOSTILE = new Set([
  'zombie', 'zombie_villager', 'husk', 'drowned', 'skeleton', 'stray', 'wither_skeleton', 'creeper',
  'spider', 'cave_spider', 'witch', 'enderman', 'endermite', 'silverfish', 'slime', 'magma_cube',
  'phantom', 'pillager', 'vindicator', 'evoker', 'vex', 'ravager', 'illusioner', 'blaze', 'ghast',
  'guardian', 'elder_guardian', 'shulker', 'hoglin', 'zoglin', 'piglin_brute', 'warden', 'wither',
  'ender_dragon', 'zombified_piglin', 'breeze', 'bogged'
])

const ANIMAL = new Set([
  'cow', 'pig', 'sheep', 'chicken', 'rabbit', 'horse', 'donkey', 'mule', 'llama', 'trader_llama',
  'cat', 'ocelot', 'wolf', 'fox', 'panda', 'polar_bear', 'parrot', 'bee', 'turtle', 'goat', 'axolotl',
  'frog', 'tadpole', 'camel', 'sniffer', 'mooshroom', 'strider', 'dolphin', 'squid', 'glow_squid',
  'cod', 'salmon', 'pufferfish', 'tropical_fish', 'bat', 'armadillo', 'allay', 'skeleton_horse',
  'zombie_horse'
])

function isPlayer (e) {
  return !!e && e.type === 'player'
}

// Name a persona can say: the username for players, the registry name otherwise.
function entityName (e) {
  if (!e) return null
  if (isPlayer(e)) return e.username || e.name || 'player'
  return e.name || (e.displayName ? String(e.displayName).toLowerCase().replace(/ /g, '_') : 'unknown')
}

function entityKind (e) {
  if (isPlayer(e)) return 'player'
  const n = e && e.name
  if (n && HOSTILE.has(n)) return 'hostile'
  if (n && ANIMAL.has(n)) return 'animal'
  return 'other'
}

function isHostile (e) {
  return entityKind(e) === 'hostile'
}

// Entities (not the bot) sorted by distance from `from` (default: the bot), within maxDistance.
function entitiesNear (bot, { maxDistance = 16, filter = null, from = null } = {}) {
  const origin = from || (bot.entity && bot.entity.position)
  if (!origin) return []
  const out = []
  for (const e of Object.values(bot.entities)) {
    if (!e || e === bot.entity || !e.position) continue
    if (filter && !filter(e)) continue
    const d = e.position.distanceTo(origin)
    if (d <= maxDistance) out.push({ entity: e, distance: d })
  }
  out.sort((a, b) => a.distance - b.distance)
  return out
}

function nearestHostile (bot, maxDistance) {
  const found = entitiesNear(bot, { maxDistance, filter: isHostile })
  return found.length ? found[0].entity : null
}

// The player's entity when visible, matching the username case-insensitively.
function findPlayerEntity (bot, username) {
  if (!username) return null
  const want = String(username).toLowerCase()
  for (const [name, p] of Object.entries(bot.players || {})) {
    if (name.toLowerCase() === want && p.entity) return p.entity
  }
  return null
}

function round1 (v) {
  return Math.round(v * 10) / 10
}

function posObj (v) {
  return { x: round1(v.x), y: round1(v.y), z: round1(v.z) }
}

module.exports = {
  HOSTILE, ANIMAL, isPlayer, entityName, entityKind, isHostile, entitiesNear, nearestHostile,
  findPlayerEntity, round1, posObj
}
