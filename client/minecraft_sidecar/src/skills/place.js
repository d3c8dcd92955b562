'use strict'
const { Vec3 } = require('../deps')
const { goals: { GoalPlaceBlock } } = require('mineflayer-pathfinder')
const { fail, debug, checkAbort, abortable, sleep, gotoGoal, findInventoryItem, blockByName, stripNs, AIR } = require('./util')
const { REACH, eyeDistance } = require('./digging')

const args = {
  block: { type: 'string', required: true },
  x: { type: 'number' },
  y: { type: 'number' },
  z: { type: 'number' }
}

function check (a) {
  const n = ['x', 'y', 'z'].filter(k => a[k] !== undefined).length
  if (n !== 0 && n !== 3) return 'place needs all of x, y and z, or none of them'
  return null
}

const REPLACEABLE = new Set([...AIR, 'water', 'lava', 'grass', 'short_grass', 'tall_grass', 'fern', 'large_fern',
  'snow', 'dead_bush', 'seagrass', 'tall_seagrass', 'vine', 'glow_lichen'])
// Reference faces in order of preference: the block below, the four sides, the block above.
const DIRS = [new Vec3(0, -1, 0), new Vec3(1, 0, 0), new Vec3(-1, 0, 0), new Vec3(0, 0, 1), new Vec3(0, 0, -1), new Vec3(0, 1, 0)]

function isSolid (block) {
  return !!block && block.boundingBox === 'block' && !REPLACEABLE.has(block.name)
}

// Whether the bot's body (0.6 wide, 1.8 tall) overlaps the block cell at pos.
function botOccupies (bot, pos) {
  const p = bot.entity.position
  return p.x + 0.3 > pos.x && p.x - 0.3 < pos.x + 1 && p.z + 0.3 > pos.z && p.z - 0.3 < pos.z + 1 &&
    p.y + 1.8 > pos.y && p.y < pos.y + 1
}

// A free cell next to the bot: on the ground at its level first, then one lower (the bot may stand
// on a pillar), then anything it could place against.
function freeSpotBeside (bot) {
  const base = bot.entity.position.floored()
  const offsets = [[1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]]
  const free = pos => {
    const here = bot.blockAt(pos)
    return !!here && REPLACEABLE.has(here.name) && !botOccupies(bot, pos)
  }
  for (const dy of [0, -1]) {
    for (const [dx, dz] of offsets) {
      const pos = base.offset(dx, dy, dz)
      if (free(pos) && isSolid(bot.blockAt(pos.offset(0, -1, 0)))) return pos
    }
  }
  for (const dy of [0, -1, 1]) {
    for (const [dx, dz] of offsets) {
      const pos = base.offset(dx, dy, dz)
      if (free(pos) && reference(bot, pos)) return pos
    }
  }
  return null
}

function reference (bot, pos) {
  for (const d of DIRS) {
    const ref = bot.blockAt(pos.plus(d))
    if (isSolid(ref)) return { block: ref, face: d.scaled(-1) }
  }
  return null
}

async function run (bot, a, signal) {
  const name = stripNs(a.block)
  if (!blockByName(bot, name)) fail(`I don't know a block called ${name}`)
  const item = findInventoryItem(bot, name)
  if (!item) fail(`I have no ${name}`)
  let pos
  if (a.x !== undefined) {
    pos = new Vec3(Math.floor(a.x), Math.floor(a.y), Math.floor(a.z))
  } else {
    pos = freeSpotBeside(bot)
    if (!pos) fail('there is no free spot beside me')
  }
  const where = `${pos.x} ${pos.y} ${pos.z}`
  const existing = bot.blockAt(pos)
  if (!existing) fail(`${where} is too far away, I can't see it`)
  if (existing.name === name) return { detail: `there is already ${name} at ${where}` }
  if (!REPLACEABLE.has(existing.name)) fail(`there is already ${existing.name} at ${where}`)
  if (!reference(bot, pos)) fail(`there is nothing at ${where} to place it against`)
  if (eyeDistance(bot, pos) > REACH - 0.3 || botOccupies(bot, pos)) {
    await gotoGoal(bot, new GoalPlaceBlock(pos, bot.world, { range: REACH - 0.5 }), signal, { kind: 'dig', noPath: `path blocked to ${where}` })
  }
  checkAbort(signal)
  if (botOccupies(bot, pos)) fail(`I'm standing right where the ${name} should go`)
  const ref = reference(bot, pos)
  if (!ref) fail(`there is nothing at ${where} to place it against`)
  const held = findInventoryItem(bot, name)
  if (!held) fail(`I have no ${name}`)
  await abortable(bot.equip(held, 'hand'), signal)
  let placeError = null
  try {
    await abortable(bot.placeBlock(ref.block, ref.face), signal)
  } catch (err) {
    checkAbort(signal)
    placeError = err
  }
  for (let i = 0; i < 10; i++) {
    const now = bot.blockAt(pos)
    if (now && now.name === name) return { detail: `placed ${name} at ${where}` }
    await sleep(100, signal)
  }
  const now = bot.blockAt(pos)
  if (placeError) debug('place:', placeError.message)
  fail(`I couldn't place the ${name}, ${where} is ${now ? now.name : 'out of sight'}`)
}

module.exports = { args, check, run, freeSpotBeside, botOccupies }
