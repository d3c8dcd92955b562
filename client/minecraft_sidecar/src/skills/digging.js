'use strict'
// Reaching, digging and picking up drops: shared by dig and collect.
const { goals: { GoalLookAtBlock, GoalNear } } = require('mineflayer-pathfinder')
const { fail, checkAbort, abortable, sleep, gotoGoal, countItems, isAir } = require('./util')

const REACH = 4.5

function eyeDistance (bot, pos) {
  return bot.entity.position.offset(0, bot.entity.eyeHeight || 1.62, 0).distanceTo(pos.offset(0.5, 0.5, 0.5))
}

async function reachBlock (bot, pos, signal, what) {
  if (eyeDistance(bot, pos) <= REACH - 0.3) return
  await gotoGoal(bot, new GoalLookAtBlock(pos, bot.world, { reach: REACH - 0.5 }), signal, { kind: 'dig', noPath: `path blocked to the ${what}` })
  checkAbort(signal)
  if (eyeDistance(bot, pos) > REACH) fail(`I can't reach the ${what}`)
}

// The lowest-tier tool that can harvest the block, as a name, or null when a hand will do.
function toolNeeded (bot, block) {
  if (!block.harvestTools) return null
  const ids = Object.keys(block.harvestTools).map(Number)
  const have = bot.inventory.items().some(it => ids.includes(it.type))
  if (have) return null
  const names = ids.map(id => bot.registry.items[id] && bot.registry.items[id].name).filter(Boolean)
  const order = ['wooden', 'golden', 'stone', 'iron', 'diamond', 'netherite']
  names.sort((a, b) => order.findIndex(t => a.startsWith(t)) - order.findIndex(t => b.startsWith(t)))
  return names[0] || 'better tool'
}

async function equipBestTool (bot, block) {
  let tool = null
  try { tool = bot.pathfinder.bestHarvestTool(block) } catch (e) {}
  if (tool && (!bot.heldItem || bot.heldItem.type !== tool.type)) await bot.equip(tool, 'hand')
}

// Digs the block at pos (already in reach); checks the spot is no longer that block.
async function digAt (bot, pos, signal) {
  const block = bot.blockAt(pos)
  if (!block || isAir(block)) return
  if (block.diggable === false || block.hardness === null || block.hardness === undefined) {
    fail(`${block.name} can't be broken`)
  }
  await abortable(equipBestTool(bot, block), signal)
  try {
    await abortable(bot.dig(block, true), signal)
  } catch (err) {
    checkAbort(signal)
    fail(`digging the ${block.name} failed: ${err && err.message ? err.message : err}`)
  }
  // The server confirms with a block update; give it a moment.
  for (let i = 0; i < 10; i++) {
    const now = bot.blockAt(pos)
    if (!now || now.type !== block.type) return
    await sleep(100, signal)
  }
  fail(`the ${block.name} is still there`)
}

function itemEntitiesNear (bot, pos, maxDistance) {
  const out = []
  for (const e of Object.values(bot.entities)) {
    if (!e || !e.position || e === bot.entity) continue
    const isItem = e.name === 'item' || (e.displayName && String(e.displayName).toLowerCase() === 'item')
    if (!isItem) continue
    const d = e.position.distanceTo(pos)
    if (d <= maxDistance) out.push(e)
  }
  out.sort((a, b) => a.position.distanceTo(bot.entity.position) - b.position.distanceTo(bot.entity.position))
  return out
}

// Walks onto dropped items near pos for up to ms, stopping once the count of `names` rose and
// nothing is left near. Never throws except on abort.
async function pickUpDrops (bot, pos, names, before, signal, ms = 3000) {
  const end = Date.now() + ms
  let chasing = null
  try {
    while (Date.now() < end) {
      checkAbort(signal)
      const items = itemEntitiesNear(bot, pos.offset(0.5, 0.5, 0.5), 6)
      if (countItems(bot, names) > before && items.length === 0) return true
      if (items.length && items[0] !== chasing) {
        chasing = items[0]
        const p = chasing.position
        bot.pathfinder.setGoal(new GoalNear(p.x, p.y, p.z, 0))
      } else if (!items.length && chasing) {
        chasing = null
        bot.pathfinder.setGoal(null)
      }
      await sleep(100, signal)
    }
  } finally {
    try { bot.pathfinder.setGoal(null) } catch (e) {}
  }
  return countItems(bot, names) > before
}

module.exports = { REACH, eyeDistance, reachBlock, toolNeeded, equipBestTool, digAt, pickUpDrops, itemEntitiesNear }
