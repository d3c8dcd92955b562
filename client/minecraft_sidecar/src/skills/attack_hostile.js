'use strict'
const { goals: { GoalFollow } } = require('mineflayer-pathfinder')
const { fail, checkAbort, abortable, sleep, movements } = require('./util')
const { nearestHostile, entityName } = require('../entities')

const args = {
  range: { type: 'number', default: 16, min: 1, max: 48 }
}

const WEAPONS = ['netherite_sword', 'diamond_sword', 'netherite_axe', 'diamond_axe', 'iron_sword', 'iron_axe',
  'stone_sword', 'stone_axe', 'golden_sword', 'wooden_sword', 'golden_axe', 'wooden_axe']

async function equipWeapon (bot) {
  for (const w of WEAPONS) {
    const it = bot.inventory.items().find(i => i.name === w)
    if (it) {
      if (!bot.heldItem || bot.heldItem.name !== w) await bot.equip(it, 'hand')
      return w
    }
  }
  return null
}

// Attacks `target` until it is dead or gone; shared with the defend reflex. Resolves 'dead' or 'gone'.
async function fight (bot, target, signal, { chase = true, giveUpDistance = 48 } = {}) {
  let dead = false
  const onDead = e => { if (e === target || e.id === target.id) dead = true }
  bot.on('entityDead', onDead)
  try {
    await equipWeapon(bot).catch(() => {})
    if (chase) {
      bot.pathfinder.setMovements(movements(bot, 'walk'))
      bot.pathfinder.setGoal(new GoalFollow(target, 2), true)
    }
    for (;;) {
      checkAbort(signal)
      if (dead) return 'dead'
      if (!bot.entities[target.id] || target.isValid === false) return 'gone'
      const d = target.position.distanceTo(bot.entity.position)
      if (d > giveUpDistance) return 'gone'
      if (d <= 3.5) {
        await abortable(bot.lookAt(target.position.offset(0, (target.height || 1.8) * 0.8, 0), true), signal)
        bot.attack(target)
        await sleep(650, signal)
      } else {
        await sleep(150, signal)
      }
    }
  } finally {
    bot.removeListener('entityDead', onDead)
    if (chase) { try { bot.pathfinder.setGoal(null) } catch (e) {} }
  }
}

async function run (bot, a, signal) {
  const target = nearestHostile(bot, a.range)
  if (!target) fail(`no hostile mob within ${a.range} blocks`)
  const name = entityName(target)
  const how = await fight(bot, target, signal, { giveUpDistance: a.range + 16 })
  return { detail: how === 'dead' ? `killed the ${name}` : `the ${name} is gone` }
}

module.exports = { args, run, fight }
