'use strict'
// Watch mode: follow one player on foot (never dig, place or attack) and narrate what they do as
// {"event": "watch", player, action, detail} lines, at most about one per second per action.
// A detail is a phrase with the player as its subject: "walked 12 blocks north", "mined oak_log".
const { goals: { GoalFollow } } = require('mineflayer-pathfinder')
const { movements, AIR } = require('./skills/util')
const { findPlayerEntity, entityName, round1 } = require('./entities')

const LIQUIDS = new Set(['water', 'lava', 'bubble_column'])
const MOVE_STEP = 8

function direction (dx, dz) {
  const ns = Math.abs(dz) >= Math.abs(dx) * 0.5 ? (dz < 0 ? 'north' : 'south') : ''
  const ew = Math.abs(dx) >= Math.abs(dz) * 0.5 ? (dx < 0 ? 'west' : 'east') : ''
  return ns && ew ? `${ns}-${ew}` : (ns || ew || 'around')
}

function describeMove (from, to) {
  const dx = to.x - from.x
  const dy = to.y - from.y
  const dz = to.z - from.z
  const flat = Math.round(Math.hypot(dx, dz))
  if (Math.abs(dy) >= 4 && Math.abs(dy) > flat) return `${dy > 0 ? 'climbed up' : 'went down'} ${Math.round(Math.abs(dy))} blocks`
  const vertical = Math.abs(dy) >= 3 ? ` and ${dy > 0 ? 'up' : 'down'} ${Math.round(Math.abs(dy))}` : ''
  return `walked ${flat} blocks ${direction(dx, dz)}${vertical}`
}

function countWords (counts) {
  return [...counts.entries()].map(([n, c]) => (c > 1 ? `${c} ${n}` : n)).join(', ')
}

function startWatch (bot, { player, followDistance = 6, emit }) {
  const watched = player
  let entity = null
  let moveAnchor = null
  let stopped = false
  let lastHeld
  const lastSent = new Map() // action -> ms
  const pending = new Map() // 'mined' | 'placed' -> Map(name -> count), flushed at most once a second
  let dead = false

  function send (action, detail) {
    if (stopped) return
    lastSent.set(action, Date.now())
    emit('watch', { player: watched, action, detail })
  }

  // Sends now unless this action went out less than a second ago (then drops it).
  function sendLimited (action, detail) {
    if (Date.now() - (lastSent.get(action) || 0) < 1000) return
    send(action, detail)
  }

  function queueBlock (action, name) {
    if (!pending.has(action)) pending.set(action, new Map())
    const m = pending.get(action)
    m.set(name, (m.get(name) || 0) + 1)
  }

  function flush () {
    for (const [action, m] of pending) {
      if (!m.size || Date.now() - (lastSent.get(action) || 0) < 1000) continue
      send(action, `${action} ${countWords(m)}`)
      m.clear()
    }
  }

  function near (pos, range) {
    return entity && entity.position && pos && entity.position.distanceTo(pos) <= range
  }

  function follow () {
    if (!entity) { bot.pathfinder.setGoal(null); return }
    bot.pathfinder.setMovements(movements(bot, 'walk'))
    bot.pathfinder.setGoal(new GoalFollow(entity, followDistance), true)
  }

  function heldName (e) {
    try { return e.heldItem ? e.heldItem.name : null } catch (err) { return null }
  }

  function check () {
    if (stopped || !bot.entity) return
    const e = findPlayerEntity(bot, watched)
    if (e && e !== entity) {
      const first = !entity
      entity = e
      moveAnchor = e.position.clone()
      lastHeld = heldName(e)
      dead = false
      if (first) send('appeared', `came into view, ${round1(e.position.distanceTo(bot.entity.position))} blocks away`)
      follow()
    } else if (!e && entity) {
      entity = null
      moveAnchor = null
      bot.pathfinder.setGoal(null)
      send('vanished', 'went out of sight')
    }
    if (entity && moveAnchor && entity.position.distanceTo(moveAnchor) >= MOVE_STEP) {
      if (Date.now() - (lastSent.get('moved') || 0) >= 1000) {
        send('moved', describeMove(moveAnchor, entity.position))
        moveAnchor = entity.position.clone()
      }
    }
    if (entity && !dead && entity.metadata && typeof entity.metadata[9] === 'number' && entity.metadata[9] <= 0) {
      dead = true
      sendLimited('died', 'died')
    }
    flush()
  }

  const onBlock = (oldBlock, newBlock) => {
    if (!entity || !newBlock || !near(newBlock.position.offset(0.5, 0.5, 0.5), 6)) return
    const oldName = oldBlock ? oldBlock.name : 'air'
    const newName = newBlock.name
    if (oldName === newName || LIQUIDS.has(oldName) || LIQUIDS.has(newName)) return
    if (!AIR.has(oldName) && AIR.has(newName)) queueBlock('mined', oldName)
    else if (AIR.has(oldName) && !AIR.has(newName)) queueBlock('placed', newName)
    flush()
  }

  let lastBlockChangeAt = 0
  const noteBlock = () => { lastBlockChangeAt = Date.now() }
  const noteDigging = () => { lastBlockChangeAt = Date.now() } // crack animation: someone is digging

  const onSwing = (e) => {
    if (!entity || e !== entity) return
    setTimeout(() => { // a swing with no block change right after it is a hit, not digging
      if (stopped || !entity || Date.now() - lastBlockChangeAt < 1000) return
      const yaw = entity.yaw
      const look = { x: -Math.sin(yaw), z: -Math.cos(yaw) }
      let best = null
      for (const other of Object.values(bot.entities)) {
        if (!other || other === entity || !other.position || other.name === 'item') continue
        const d = other.position.distanceTo(entity.position)
        if (d > 4) continue
        const dx = other.position.x - entity.position.x
        const dz = other.position.z - entity.position.z
        const len = Math.hypot(dx, dz) || 1
        if ((dx * look.x + dz * look.z) / len < 0.5 && d > 1.5) continue // behind them
        if (!best || d < best.d) best = { e: other, d }
      }
      if (best) sendLimited('attacked', best.e === bot.entity ? 'hit me' : `attacked ${entityName(best.e)}`)
    }, 300)
  }

  const onHurt = (e) => {
    if (!entity || e === entity || !e.position || !near(e.position, 5)) return
    sendLimited('attacked', e === bot.entity ? 'hit me' : `attacked ${entityName(e)}`)
  }

  const onEquip = (e) => {
    if (!entity || e !== entity) return
    const h = heldName(e)
    if (h === lastHeld) return
    lastHeld = h
    sendLimited('held', h ? `is holding ${h}` : 'put away what they held')
  }

  const onDead = (e) => {
    if (!entity || e !== entity || dead) return
    dead = true
    sendLimited('died', 'died')
  }

  const onChat = (username, message) => {
    if (String(username).toLowerCase() !== String(watched).toLowerCase()) return
    send('chat', `said: ${message}`)
  }

  // One list for both ends: what is listened to here is exactly what stop() removes.
  const listeners = [
    ['blockUpdate', onBlock],
    ['blockUpdate', noteBlock],
    ['blockBreakProgressObserved', noteDigging],
    ['entitySwingArm', onSwing],
    ['entityHurt', onHurt],
    ['entityEquip', onEquip],
    ['entityDead', onDead],
    ['chat', onChat]
  ]
  for (const [event, listener] of listeners) bot.on(event, listener)
  const timer = setInterval(() => { try { check() } catch (err) { console.error('[sidecar] watch:', err) } }, 250)
  check()

  return {
    get entity () { return entity },
    stop () {
      stopped = true
      clearInterval(timer)
      for (const [event, listener] of listeners) bot.removeListener(event, listener)
      try { bot.pathfinder.setGoal(null) } catch (err) {}
    }
  }
}

module.exports = { startWatch, describeMove, direction }
