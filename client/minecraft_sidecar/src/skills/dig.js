'use strict'
const { Vec3 } = require('../deps')
const { fail, checkAbort, isAir } = require('./util')
const { reachBlock, digAt } = require('./digging')

const args = {
  x: { type: 'number', required: true },
  y: { type: 'number', required: true },
  z: { type: 'number', required: true }
}

const LIQUIDS = new Set(['water', 'lava', 'bubble_column'])

async function run (bot, a, signal) {
  const pos = new Vec3(Math.floor(a.x), Math.floor(a.y), Math.floor(a.z))
  const where = `${pos.x} ${pos.y} ${pos.z}`
  const block = bot.blockAt(pos)
  if (!block) fail(`${where} is too far away, I can't see it`)
  if (isAir(block)) fail(`there is nothing to dig at ${where}`)
  if (LIQUIDS.has(block.name)) fail(`I can't dig ${block.name}`)
  if (block.diggable === false || block.hardness === null || block.hardness === undefined) fail(`${block.name} can't be broken`)
  await reachBlock(bot, pos, signal, block.name)
  await digAt(bot, pos, signal)
  checkAbort(signal)
  const now = bot.blockAt(pos)
  if (!now) fail(`I lost sight of ${where}`)
  if (!isAir(now)) fail(`${where} is ${now.name} now, not air`)
  return { detail: `dug the ${block.name} at ${where}` }
}

module.exports = { args, run }
