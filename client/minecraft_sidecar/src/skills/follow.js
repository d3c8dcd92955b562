'use strict'
const { goals: { GoalFollow } } = require('mineflayer-pathfinder')
const { fail, checkAbort, sleep, movements } = require('./util')
const { findPlayerEntity, round1 } = require('../entities')

const args = {
  player: { type: 'string', required: true },
  distance: { type: 'number', default: 3, min: 1, max: 32 },
  seconds: { type: 'number', default: 20, min: 1, max: 3600 }
}

async function run (bot, a, signal) {
  let entity = findPlayerEntity(bot, a.player)
  if (!entity) fail(`I can't see ${a.player}`)
  bot.pathfinder.setMovements(movements(bot, 'walk'))
  bot.pathfinder.setGoal(new GoalFollow(entity, a.distance), true)
  const end = Date.now() + a.seconds * 1000
  let lostSince = null
  try {
    while (Date.now() < end) {
      checkAbort(signal)
      const e = findPlayerEntity(bot, a.player)
      if (!e) {
        if (lostSince === null) lostSince = Date.now()
        if (Date.now() - lostSince > 3000) fail(`I lost sight of ${a.player}`)
      } else {
        lostSince = null
        if (e !== entity) { // respawned or came back into view: a new entity object
          entity = e
          bot.pathfinder.setGoal(new GoalFollow(entity, a.distance), true)
        }
      }
      await sleep(Math.min(250, Math.max(0, end - Date.now())), signal)
    }
  } finally {
    bot.pathfinder.setGoal(null)
  }
  const d = entity && entity.position ? round1(entity.position.distanceTo(bot.entity.position)) : null
  return { detail: `followed ${a.player} for ${a.seconds} s${d !== null ? `, now ${d} blocks away` : ''}` }
}

module.exports = { args, run }
