'use strict'
const { Vec3 } = require('../deps')
const { goals: { GoalNear } } = require('mineflayer-pathfinder')
const { fail, checkAbort, gotoGoal } = require('./util')
const { findPlayerEntity, round1 } = require('../entities')

const args = {
  x: { type: 'number' },
  y: { type: 'number' },
  z: { type: 'number' },
  player: { type: 'string' },
  range: { type: 'number', default: 1, min: 0, max: 64 }
}

function check (a) {
  const hasXyz = ['x', 'y', 'z'].filter(k => a[k] !== undefined).length
  if (a.player !== undefined && hasXyz) return 'goto takes either x, y, z or player, not both'
  if (a.player === undefined && hasXyz !== 3) return 'goto needs x, y and z, or player'
  return null
}

// Within range: the goal's own test on the block we stand in, or the true distance with a little slack.
function within (bot, goal, target, range) {
  const p = bot.entity.position
  return goal.isEnd(p.floored()) || p.distanceTo(target) <= range + 0.75
}

async function run (bot, a, signal) {
  const range = a.range
  if (a.player !== undefined) {
    let target = null
    for (let attempt = 0; attempt < 4; attempt++) {
      checkAbort(signal)
      const e = findPlayerEntity(bot, a.player)
      if (!e) fail(`I can't see ${a.player}`)
      target = e.position.clone()
      const goal = new GoalNear(target.x, target.y, target.z, range)
      if (within(bot, goal, target, range)) {
        return { detail: `I'm next to ${a.player}, ${round1(bot.entity.position.distanceTo(target))} blocks away` }
      }
      await gotoGoal(bot, goal, signal)
    }
    fail(`I couldn't catch up with ${a.player}`)
  }
  const target = new Vec3(a.x, a.y, a.z)
  const goal = new GoalNear(target.x, target.y, target.z, range)
  if (!within(bot, goal, target, range)) await gotoGoal(bot, goal, signal)
  checkAbort(signal)
  if (!within(bot, goal, target, range)) {
    fail(`path blocked, I'm still ${round1(bot.entity.position.distanceTo(target))} blocks away`)
  }
  const p = bot.entity.position
  return { detail: `I'm at ${Math.floor(p.x)} ${Math.floor(p.y)} ${Math.floor(p.z)}` }
}

module.exports = { args, check, run }
