'use strict'
const { goals: { GoalXZ } } = require('mineflayer-pathfinder')
const { fail, checkAbort, gotoGoal, SkillError } = require('./util')
const { nearestHostile, entityName, round1 } = require('../entities')

const args = {
  distance: { type: 'number', default: 16, min: 2, max: 64 }
}

function flatDistance (a, b) {
  return Math.hypot(a.x - b.x, a.z - b.z)
}

async function run (bot, a, signal) {
  const hostile = nearestHostile(bot, 32)
  const origin = (hostile ? hostile.position : bot.entity.position).clone()
  const from = hostile ? `the ${entityName(hostile)}` : 'where I was'
  let dx = bot.entity.position.x - origin.x
  let dz = bot.entity.position.z - origin.z
  let len = Math.hypot(dx, dz)
  if (len < 0.5) { // no direction away from it: run the way we face
    dx = -Math.sin(bot.entity.yaw)
    dz = -Math.cos(bot.entity.yaw)
    len = 1
  }
  dx /= len
  dz /= len
  let lastError = null
  for (const deg of [0, 45, -45, 90, -90, 135, -135]) {
    checkAbort(signal)
    const r = deg * Math.PI / 180
    const ux = dx * Math.cos(r) - dz * Math.sin(r)
    const uz = dx * Math.sin(r) + dz * Math.cos(r)
    const tx = origin.x + ux * (a.distance + 2)
    const tz = origin.z + uz * (a.distance + 2)
    try {
      await gotoGoal(bot, new GoalXZ(tx, tz), signal, { kind: 'walk' })
    } catch (err) {
      if (!(err instanceof SkillError) || signal.aborted) throw err
      lastError = err.message
    }
    const d = flatDistance(bot.entity.position, origin)
    if (d >= a.distance) return { detail: `I'm ${round1(d)} blocks away from ${from}` }
  }
  fail(`I couldn't get ${a.distance} blocks away from ${from}${lastError ? ` (${lastError})` : ''}`)
}

module.exports = { args, run }
