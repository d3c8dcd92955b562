'use strict'
const { Vec3 } = require('../deps')
const { fail, abortable } = require('./util')
const { findPlayerEntity } = require('../entities')

const args = {
  player: { type: 'string' },
  x: { type: 'number' },
  y: { type: 'number' },
  z: { type: 'number' }
}

function check (a) {
  const hasXyz = ['x', 'y', 'z'].filter(k => a[k] !== undefined).length
  if (a.player !== undefined && hasXyz) return 'look_at takes either x, y, z or player, not both'
  if (a.player === undefined && hasXyz !== 3) return 'look_at needs x, y and z, or player'
  return null
}

function angleDiff (a, b) {
  let d = (a - b) % (2 * Math.PI)
  if (d > Math.PI) d -= 2 * Math.PI
  if (d < -Math.PI) d += 2 * Math.PI
  return Math.abs(d)
}

async function run (bot, a, signal) {
  let target
  let what
  if (a.player !== undefined) {
    const e = findPlayerEntity(bot, a.player)
    if (!e) fail(`I can't see ${a.player}`)
    target = e.position.offset(0, (e.height || 1.8) * 0.9, 0)
    what = a.player
  } else {
    target = new Vec3(a.x, a.y, a.z)
    what = `${a.x} ${a.y} ${a.z}`
  }
  await abortable(bot.lookAt(target, true), signal)
  // Same arithmetic as mineflayer's lookAt: check we face the point.
  const eye = bot.entity.position.offset(0, bot.entity.eyeHeight || 1.62, 0)
  const delta = target.minus(eye)
  const yaw = Math.atan2(-delta.x, -delta.z)
  const pitch = Math.atan2(delta.y, Math.sqrt(delta.x * delta.x + delta.z * delta.z))
  const close = delta.norm() < 0.3
  if (!close && (angleDiff(yaw, bot.entity.yaw) > 0.15 || Math.abs(pitch - bot.entity.pitch) > 0.15)) {
    fail(`I couldn't turn to face ${what}`)
  }
  return { detail: `looking at ${what}` }
}

module.exports = { args, check, run, watchSafe: true }
