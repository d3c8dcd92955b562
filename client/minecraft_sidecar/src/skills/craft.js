'use strict'
const { goals: { GoalNear } } = require('mineflayer-pathfinder')
const { fail, checkAbort, abortable, sleep, gotoGoal, countItems, itemByName, stripNs } = require('./util')

const args = {
  item: { type: 'string', required: true },
  count: { type: 'integer', default: 1, min: 1, max: 576 }
}

async function run (bot, a, signal) {
  const name = stripNs(a.item)
  const item = itemByName(bot, name)
  if (!item) fail(`I don't know an item called ${name}`)
  const all = bot.recipesAll(item.id, null, true)
  if (!all.length) fail(`there is no recipe for ${name}`)

  let table = null
  let recipes = bot.recipesFor(item.id, null, a.count, null)
  if (!recipes.length) {
    // recipesFor only asks whether a table is given, so `true` stands for "if I had one".
    if (!bot.recipesFor(item.id, null, a.count, true).length) {
      if (a.count > 1 && bot.recipesFor(item.id, null, 1, true).length) fail(`not enough materials for ${a.count} ${name}`)
      fail(`no recipe for ${name} with what I have`)
    }
    table = bot.findBlock({ matching: bot.registry.blocksByName.crafting_table.id, maxDistance: 32 })
    if (!table) fail('needs a crafting table')
    recipes = bot.recipesFor(item.id, null, a.count, table)
    if (!recipes.length) fail(`no recipe for ${name} with what I have`)
  }
  const recipe = recipes[0]
  if (!recipe.requiresTable) table = null
  if (table) {
    const tp = table.position
    if (bot.entity.position.distanceTo(tp.offset(0.5, 0.5, 0.5)) > 3.5) {
      await gotoGoal(bot, new GoalNear(tp.x, tp.y, tp.z, 2), signal, { kind: 'walk', noPath: 'path blocked to the crafting table' })
    }
    checkAbort(signal)
    table = bot.blockAt(tp)
    if (!table || table.name !== 'crafting_table') fail('the crafting table is gone')
  }
  const times = Math.ceil(a.count / recipe.result.count)
  const before = countItems(bot, name)
  try {
    await abortable(bot.craft(recipe, times, table), signal)
  } catch (err) {
    checkAbort(signal)
    const msg = String(err && err.message ? err.message : err).replace(/^Error: /, '')
    fail(`crafting ${name} failed: ${msg.slice(0, 120)}`)
  }
  // Inventory updates can trail the window close a little.
  for (let i = 0; i < 10 && countItems(bot, name) - before < a.count; i++) await sleep(100, signal)
  const gained = countItems(bot, name) - before
  if (gained < a.count) fail(`crafting ${name} didn't work, I got ${gained} of ${a.count}`)
  return { detail: `crafted ${gained} ${name}${table ? ' at the crafting table' : ''}, I have ${countItems(bot, name)} now` }
}

module.exports = { args, run }
