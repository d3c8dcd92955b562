'use strict'
// Shared helpers for skills: speakable errors, abort handling, pathing, inventory counts.

const { Movements } = require('mineflayer-pathfinder')

// A failure whose message a persona can say as is.
class SkillError extends Error {
  constructor (message) {
    super(message)
    this.name = 'SkillError'
  }
}

const DEBUG = !!process.env.SPARK_SIDECAR_DEBUG
function debug (...a) {
  if (DEBUG) console.error('[sidecar debug]', ...a)
}

function fail (message) {
  throw new SkillError(message)
}

function abortError (signal) {
  const r = signal && signal.reason
  if (r instanceof Error) return r
  return new SkillError(r ? String(r) : 'stopped')
}

function checkAbort (signal) {
  if (signal && signal.aborted) throw abortError(signal)
}

// Resolves with the promise, or rejects as soon as the signal aborts.
function abortable (promise, signal) {
  if (!signal) return promise
  if (signal.aborted) {
    promise.catch(() => {})
    return Promise.reject(abortError(signal))
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(abortError(signal))
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(v => { signal.removeEventListener('abort', onAbort); resolve(v) },
      e => { signal.removeEventListener('abort', onAbort); reject(e) })
  })
}

function sleep (ms, signal) {
  return abortable(new Promise(resolve => setTimeout(resolve, ms)), signal)
}

// Movements per bot and kind: 'dig' (may break and pillar), 'walk' (never changes the world).
const movementsCache = new WeakMap()
function movements (bot, kind = 'dig') {
  let perBot = movementsCache.get(bot)
  if (!perBot) { perBot = {}; movementsCache.set(bot, perBot) }
  if (!perBot[kind]) {
    const m = new Movements(bot)
    m.canOpenDoors = false
    if (kind === 'walk') {
      m.canDig = false
      m.allow1by1towers = false
      m.scafoldingBlocks = []
      m.allowParkour = true
    } else {
      m.canDig = true
    }
    perBot[kind] = m
  }
  return perBot[kind]
}

// Paths to a goal. Resolves when the pathfinder says it is there (callers still check the world);
// throws a SkillError with a speakable reason otherwise.
async function gotoGoal (bot, goal, signal, { kind = 'dig', noPath = 'path blocked' } = {}) {
  checkAbort(signal)
  bot.pathfinder.setMovements(movements(bot, kind))
  try {
    await abortable(bot.pathfinder.goto(goal), signal)
  } catch (err) {
    if (signal && signal.aborted) throw abortError(signal)
    if (err instanceof SkillError) throw err
    if (err && err.name === 'NoPath') fail(noPath)
    if (err && err.name === 'Timeout') fail('the way there is too hard to work out')
    if (err && (err.name === 'GoalChanged' || err.name === 'PathStopped')) fail('my path was interrupted')
    fail(`I could not get there (${err && err.message ? err.message : err})`)
  }
}

function stopMoving (bot) {
  try { if (bot.pathfinder) bot.pathfinder.setGoal(null) } catch (e) {}
  try { if (bot.targetDigBlock) bot.stopDigging() } catch (e) {}
  try { bot.clearControlStates() } catch (e) {}
  try { if (bot.currentWindow) bot.closeWindow(bot.currentWindow) } catch (e) {}
}

function countItems (bot, names) {
  const set = names instanceof Set ? names : new Set(Array.isArray(names) ? names : [names])
  let n = 0
  for (const it of bot.inventory.items()) if (set.has(it.name)) n += it.count
  const off = bot.inventory.slots[45]
  if (off && set.has(off.name)) n += off.count
  return n
}

function findInventoryItem (bot, name) {
  return bot.inventory.items().find(it => it.name === name) || null
}

function itemByName (bot, name) {
  return bot.registry.itemsByName[stripNs(name)] || null
}

function blockByName (bot, name) {
  return bot.registry.blocksByName[stripNs(name)] || null
}

function stripNs (name) {
  return String(name).trim().toLowerCase().replace(/^minecraft:/, '').replace(/ /g, '_')
}

// Item names a block drops when mined (registry data); the block's own name when unknown.
function dropsOf (bot, blockName) {
  const b = blockByName(bot, blockName)
  const names = new Set()
  if (b && Array.isArray(b.drops)) {
    for (const d of b.drops) {
      const id = typeof d === 'number' ? d : (d && d.drop !== undefined ? (typeof d.drop === 'number' ? d.drop : d.drop.id) : undefined)
      const item = id !== undefined ? bot.registry.items[id] : null
      if (item) names.add(item.name)
    }
  }
  if (names.size === 0) names.add(blockName)
  return [...names]
}

const AIR = new Set(['air', 'cave_air', 'void_air'])
function isAir (block) {
  return !block || AIR.has(block.name)
}

function distanceWords (d) {
  return `${Math.round(d * 10) / 10} blocks`
}

module.exports = {
  SkillError, fail, debug, abortError, checkAbort, abortable, sleep, movements, gotoGoal, stopMoving,
  countItems, findInventoryItem, itemByName, blockByName, stripNs, dropsOf, AIR, isAir, distanceWords
}
