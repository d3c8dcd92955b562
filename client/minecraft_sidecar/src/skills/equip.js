'use strict'
const { fail, abortable, findInventoryItem, itemByName, stripNs } = require('./util')

const args = {
  item: { type: 'string', required: true }
}

function destinationFor (name) {
  if (/_helmet$/.test(name)) return 'head'
  if (/_chestplate$/.test(name) || name === 'elytra') return 'torso'
  if (/_leggings$/.test(name)) return 'legs'
  if (/_boots$/.test(name)) return 'feet'
  return 'hand'
}

function equipped (bot, name, dest) {
  if (dest === 'hand') return !!bot.heldItem && bot.heldItem.name === name
  const slot = bot.inventory.slots[bot.getEquipmentDestSlot(dest)]
  return !!slot && slot.name === name
}

async function run (bot, a, signal) {
  const name = stripNs(a.item)
  if (!itemByName(bot, name)) fail(`I don't know an item called ${name}`)
  const dest = destinationFor(name)
  if (equipped(bot, name, dest)) return { detail: dest === 'hand' ? `already holding ${name}` : `already wearing ${name}` }
  const item = findInventoryItem(bot, name)
  if (!item) fail(`I have no ${name}`)
  try {
    await abortable(bot.equip(item, dest), signal)
  } catch (err) {
    if (signal.aborted) throw err
    fail(`I couldn't equip the ${name}: ${err && err.message ? err.message : err}`)
  }
  if (!equipped(bot, name, dest)) fail(`I couldn't equip the ${name}`)
  return { detail: dest === 'hand' ? `holding ${name}` : `wearing ${name}` }
}

module.exports = { args, run }
