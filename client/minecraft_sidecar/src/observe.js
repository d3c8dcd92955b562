'use strict'
// The `observe` reply (PROTOCOL.md, Observation).
const { Vec3 } = require('./deps')
const { entityName, entityKind, round1, posObj } = require('./entities')
const { AIR } = require('./skills/util')

const MAX_BLOCK_NAMES = 24
const MAX_ENTITIES = 16

function timeBucket (t) {
  t = ((t % 24000) + 24000) % 24000
  if (t < 12000) return 'day'
  if (t < 13000) return 'sunset'
  if (t < 23000) return 'night'
  return 'sunrise'
}

// Counts blocks by name within a sphere of `radius` around the bot, straight from chunk state ids
// (no Block objects), and keeps the nearest position per name.
function scanBlocks (bot, radius) {
  const origin = bot.entity.position
  const c = origin.floored()
  const byState = bot.registry.blocksByStateId
  const counts = new Map()
  const nearest = new Map()
  const cursor = new Vec3(0, 0, 0)
  const minY = bot.game.minY !== undefined ? bot.game.minY : -64
  const maxY = minY + (bot.game.height || 384) - 1
  const r2 = radius * radius
  const nameOf = new Map() // state id -> name or null (air)
  for (let dy = -radius; dy <= radius; dy++) {
    const y = c.y + dy
    if (y < minY || y > maxY) continue
    for (let dx = -radius; dx <= radius; dx++) {
      for (let dz = -radius; dz <= radius; dz++) {
        const d2 = dx * dx + dy * dy + dz * dz
        if (d2 > r2) continue
        cursor.set(c.x + dx, y, c.z + dz)
        const sid = bot.world.getBlockStateId(cursor)
        if (sid === undefined || sid === null) continue
        let name = nameOf.get(sid)
        if (name === undefined) {
          const b = byState[sid]
          name = b && !AIR.has(b.name) ? b.name : null
          nameOf.set(sid, name)
        }
        if (name === null) continue
        counts.set(name, (counts.get(name) || 0) + 1)
        const cur = nearest.get(name)
        if (!cur || d2 < cur.d2) nearest.set(name, { d2, x: cursor.x, y: cursor.y, z: cursor.z })
      }
    }
  }
  const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, MAX_BLOCK_NAMES)
  const nearbyBlocks = {}
  const nearestOut = {}
  for (const [name, n] of top) {
    nearbyBlocks[name] = n
    const p = nearest.get(name)
    const dist = origin.distanceTo(new Vec3(p.x + 0.5, p.y + 0.5, p.z + 0.5))
    nearestOut[name] = { x: p.x, y: p.y, z: p.z, distance: round1(dist) }
  }
  return { nearbyBlocks, nearest: nearestOut }
}

function inventory (bot) {
  const out = {}
  for (const it of bot.inventory.items()) out[it.name] = (out[it.name] || 0) + it.count
  const off = bot.inventory.slots[45]
  if (off) out[off.name] = (out[off.name] || 0) + off.count
  return out
}

function entities (bot, radius) {
  const out = []
  for (const e of Object.values(bot.entities)) {
    if (!e || e === bot.entity || !e.position) continue
    const d = e.position.distanceTo(bot.entity.position)
    if (d > radius) continue
    out.push({ name: entityName(e), kind: entityKind(e), distance: round1(d) })
  }
  out.sort((a, b) => a.distance - b.distance)
  return out.slice(0, MAX_ENTITIES)
}

function observe (bot, { radius = 16, skill = null } = {}) {
  const { nearbyBlocks, nearest } = scanBlocks(bot, Math.round(radius))
  const timeOfDay = bot.time && typeof bot.time.timeOfDay === 'number' ? bot.time.timeOfDay : 0
  const dim = String((bot.game && bot.game.dimension) || 'overworld').replace(/^minecraft:/, '')
  return {
    position: posObj(bot.entity.position),
    health: round1(bot.health ?? 20),
    food: bot.food ?? 20,
    time: timeBucket(timeOfDay),
    time_of_day: timeOfDay,
    dimension: dim,
    game_mode: (bot.game && bot.game.gameMode) || 'survival',
    held: bot.heldItem ? bot.heldItem.name : null,
    inventory: inventory(bot),
    nearby_blocks: nearbyBlocks,
    nearest,
    entities: entities(bot, radius),
    skill
  }
}

module.exports = { observe, timeBucket, scanBlocks }
