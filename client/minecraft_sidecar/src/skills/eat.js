'use strict'
const { fail, abortable, sleep, findInventoryItem, itemByName, stripNs } = require('./util')

const args = {
  item: { type: 'string' }
}

const BAD_FOOD = new Set(['rotten_flesh', 'spider_eye', 'poisonous_potato', 'pufferfish', 'chicken', 'suspicious_stew', 'chorus_fruit'])
const ALWAYS_EDIBLE = new Set(['golden_apple', 'enchanted_golden_apple', 'chorus_fruit', 'milk_bucket', 'potion', 'honey_bottle'])

// The best food in the inventory (by quality), leaving harmful food for last; null when none.
function bestFood (bot) {
  const foods = bot.registry.foodsByName || {}
  let best = null
  for (const it of bot.inventory.items()) {
    const f = foods[it.name]
    if (!f) continue
    const score = (f.effectiveQuality || f.foodPoints || 0) - (BAD_FOOD.has(it.name) ? 100 : 0)
    if (!best || score > best.score) best = { item: it, score }
  }
  return best ? best.item : null
}

async function run (bot, a, signal) {
  let item
  if (a.item !== undefined) {
    const name = stripNs(a.item)
    if (!itemByName(bot, name)) fail(`I don't know an item called ${name}`)
    if (!(bot.registry.foodsByName || {})[name]) fail(`${name} is not food`)
    item = findInventoryItem(bot, name)
    if (!item) fail(`I have no ${name}`)
  } else {
    item = bestFood(bot)
    if (!item) fail('I have no food')
  }
  const name = item.name
  if (bot.food >= 20 && bot.game.gameMode !== 'creative' && !ALWAYS_EDIBLE.has(name)) fail("I'm not hungry, my food bar is full")
  const before = bot.food
  await abortable(bot.equip(item, 'hand'), signal)
  try {
    await abortable(bot.consume(), signal)
  } catch (err) {
    if (signal.aborted) throw err
    // consume() times out on servers that never confirm; the food level decides below.
  }
  for (let i = 0; i < 20 && bot.food <= before; i++) await sleep(100, signal)
  if (bot.food <= before) fail(`I tried to eat the ${name} but I'm no less hungry`)
  return { detail: `ate ${name}, food ${before} -> ${bot.food}` }
}

module.exports = { args, run, bestFood }
