'use strict'
const { fail, debug, checkAbort, countItems, blockByName, itemByName, stripNs, dropsOf, abortError } = require('./util')
const { reachBlock, digAt, pickUpDrops, toolNeeded } = require('./digging')

const args = {
  block: { type: 'string', required: true },
  count: { type: 'integer', default: 1, min: 1, max: 576 }
}

const RADIUS = 32

async function run (bot, a, signal) {
  const name = stripNs(a.block)
  const def = blockByName(bot, name)
  if (!def) {
    fail(itemByName(bot, name) ? `${name} is an item, not a block I can mine` : `I don't know a block called ${name}`)
  }
  if (Array.isArray(def.drops) && def.drops.length === 0) fail(`${name} drops nothing I can pick up`)
  const drops = dropsOf(bot, name)
  const dropName = drops[0]
  const start = countItems(bot, drops)
  const gained = () => countItems(bot, drops) - start
  const skip = new Set()
  let failures = 0
  let lastError = null
  let toolChecked = false

  while (gained() < a.count) {
    checkAbort(signal)
    const positions = bot.findBlocks({ matching: def.id, maxDistance: RADIUS, count: 64 })
      .filter(p => !skip.has(p.toString()))
    if (!positions.length) {
      const got = gained()
      if (got <= 0) fail(lastError ? `${lastError} (no other ${name} within ${RADIUS} blocks)` : `no ${name} within ${RADIUS} blocks`)
      fail(`got only ${got} of ${a.count} ${dropName}: no more ${name} within ${RADIUS} blocks`)
    }
    const pos = positions[0]
    if (!toolChecked) {
      const need = toolNeeded(bot, bot.blockAt(pos))
      if (need) fail(`I need a ${need} or better to get ${dropName} from ${name}`)
      toolChecked = true
    }
    const before = countItems(bot, drops)
    try {
      await reachBlock(bot, pos, signal, name)
      await digAt(bot, pos, signal)
      await pickUpDrops(bot, pos, drops, before, signal)
    } catch (err) {
      if (signal.aborted) throw abortError(signal)
      debug('collect: skipping', pos.toString(), err && err.message)
      skip.add(pos.toString())
      failures++
      lastError = err && err.message ? err.message : String(err)
      if (failures >= 6) {
        const got = gained()
        fail(got > 0 ? `got only ${got} of ${a.count} ${dropName}: ${lastError}` : lastError)
      }
      continue
    }
    if (countItems(bot, drops) <= before) {
      debug('collect: no pickup at', pos.toString(), 'bot at', bot.entity.position.toString())
      skip.add(pos.toString())
      failures++
      lastError = `I mined the ${name} but couldn't pick up the ${dropName}`
      if (failures >= 6) fail(lastError)
    }
  }
  return { detail: `collected ${gained()} ${dropName}, I have ${countItems(bot, drops)} now` }
}

module.exports = { args, run }
