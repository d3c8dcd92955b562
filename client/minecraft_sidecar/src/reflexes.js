'use strict'
// Play-mode reflexes: eat, defend, escape_lava, escape_water, unstuck. One at a time, checked every
// 500 ms and on health changes; each reports {"event": "reflex", name, detail, ok}.
const { nearestHostile, entityName } = require('./entities')
const { sleep, SkillError } = require('./skills/util')
const eatSkill = require('./skills/eat')
const { fight } = require('./skills/attack_hostile')

const MOVING_SKILLS = new Set(['goto', 'collect', 'follow', 'attack_hostile', 'flee'])
const WATER = new Set(['water', 'bubble_column'])

function onFire (bot) {
  const flags = bot.entity && bot.entity.metadata && bot.entity.metadata[0]
  return typeof flags === 'number' && (flags & 0x01) !== 0
}

function headUnderWater (bot) {
  const eye = bot.entity.position.offset(0, bot.entity.eyeHeight || 1.62, 0)
  const b = bot.blockAt(eye)
  return !!b && (WATER.has(b.name) || (b.getProperties && b.getProperties().waterlogged === true))
}

function withTimeout (ms, reason) {
  const c = new AbortController()
  const t = setTimeout(() => c.abort(new SkillError(reason)), ms)
  return { signal: c.signal, done: () => clearTimeout(t) }
}

// The nearest standable block (solid, two free blocks above, no lava) within 5 blocks.
function safeSpot (bot) {
  const c = bot.entity.position.floored()
  let best = null
  for (let dx = -5; dx <= 5; dx++) {
    for (let dy = -2; dy <= 3; dy++) {
      for (let dz = -5; dz <= 5; dz++) {
        const p = c.offset(dx, dy, dz)
        const b = bot.blockAt(p)
        const a1 = bot.blockAt(p.offset(0, 1, 0))
        const a2 = bot.blockAt(p.offset(0, 2, 0))
        if (!b || !a1 || !a2 || b.boundingBox !== 'block' || b.name === 'magma_block') continue
        if (a1.boundingBox !== 'empty' || a2.boundingBox !== 'empty' || a1.name === 'lava' || a2.name === 'lava' || a1.name === 'fire') continue
        const d = p.distanceTo(c)
        if (!best || d < best.d) best = { p, d }
      }
    }
  }
  return best ? best.p : null
}

function startReflexes (bot, { emit, runner }) {
  let active = null
  let lastDamageAt = 0
  let eatCooldownUntil = 0
  let lavaCooldownUntil = 0
  let waterCooldownUntil = 0
  let anchor = null // {pos, at} for unstuck
  let lastGoal = null
  let lastDynamic = false
  let stopped = false

  const onGoal = (goal, dynamic) => { lastGoal = goal; lastDynamic = dynamic }
  bot.on('goal_updated', onGoal)

  async function fire (name, fn) {
    active = name
    let out
    try {
      out = await fn()
    } catch (err) {
      out = { ok: false, detail: err && err.message ? err.message : String(err) }
    } finally {
      active = null
    }
    if (!stopped) emit('reflex', { name, detail: out.detail, ok: !!out.ok })
  }

  async function escapeLava () {
    lavaCooldownUntil = Date.now() + 3000
    const spot = safeSpot(bot)
    const { signal, done } = withTimeout(4000, 'timed out')
    try {
      bot.setControlState('jump', true)
      if (spot) {
        bot.setControlState('forward', true)
        bot.setControlState('sprint', true)
      }
      for (let i = 0; i < 40 && (bot.entity.isInLava || i < 4); i++) {
        if (spot) await bot.lookAt(spot.offset(0.5, 1, 0.5), true)
        await sleep(100, signal)
      }
    } catch (e) {} finally {
      done()
      for (const s of ['jump', 'forward', 'sprint']) bot.setControlState(s, false)
    }
    const ok = !bot.entity.isInLava
    return { ok, detail: ok ? (spot ? `got out of the lava to ${spot.x} ${spot.y + 1} ${spot.z}` : 'got out of the lava') : 'I am still in lava' }
  }

  async function escapeWater () {
    waterCooldownUntil = Date.now() + 2000
    const { signal, done } = withTimeout(5000, 'timed out')
    try {
      bot.setControlState('jump', true)
      for (let i = 0; i < 50 && headUnderWater(bot); i++) await sleep(100, signal)
      await sleep(300, signal)
    } catch (e) {} finally {
      done()
      if (!bot.pathfinder || !bot.pathfinder.isMoving()) bot.setControlState('jump', false)
    }
    const ok = !headUnderWater(bot)
    return { ok, detail: ok ? 'swam up for air' : 'my head is still under water' }
  }

  async function defend (target) {
    const name = entityName(target)
    const { signal, done } = withTimeout(8000, 'gave up after 8 s')
    try {
      const how = await fight(bot, target, signal, { chase: false, giveUpDistance: 8 })
      return { ok: true, detail: how === 'dead' ? `fought off the ${name}, it is dead` : `fought off the ${name}, it is gone` }
    } catch (err) {
      return { ok: false, detail: `fought the ${name} but ${err.message}` }
    } finally {
      done()
    }
  }

  async function eat () {
    const { signal, done } = withTimeout(6000, 'timed out')
    try {
      const r = await eatSkill.run(bot, {}, signal)
      return { ok: true, detail: r.detail }
    } catch (err) {
      eatCooldownUntil = Date.now() + 30000 // a server that never feeds us: do not retry at once
      return { ok: false, detail: err.message }
    } finally {
      done()
    }
  }

  async function unstuck () {
    const start = bot.entity.position.clone()
    try {
      bot.setControlState('jump', true)
      bot.setControlState(Math.random() < 0.5 ? 'left' : 'right', true)
      await sleep(500)
    } finally {
      for (const s of ['jump', 'left', 'right']) bot.setControlState(s, false)
    }
    if (lastGoal && runner.name) bot.pathfinder.setGoal(lastGoal, lastDynamic) // same goal: fresh path
    await sleep(1500)
    const moved = bot.entity.position.distanceTo(start)
    anchor = null
    return { ok: moved >= 0.5, detail: moved >= 0.5 ? `hopped sideways, moved ${Math.round(moved * 10) / 10} blocks` : 'tried to hop free but I am still stuck' }
  }

  function stuckCheck () {
    const skill = runner.name
    const p = bot.pathfinder
    const trying = skill && MOVING_SKILLS.has(skill) && p && p.isMoving() && !p.isMining() && !p.isBuilding() && !bot.targetDigBlock
    if (!trying) { anchor = null; return false }
    const now = Date.now()
    const pos = bot.entity.position
    if (!anchor || pos.distanceTo(anchor.pos) >= 0.5) { anchor = { pos: pos.clone(), at: now }; return false }
    return now - anchor.at >= 8000
  }

  function tick () {
    if (stopped || active || !bot.entity || bot.health <= 0) return
    const now = Date.now()
    const feet = bot.blockAt(bot.entity.position.floored())
    if ((bot.entity.isInLava || (onFire(bot) && feet && (feet.name === 'lava' || feet.name === 'fire'))) && now > lavaCooldownUntil) {
      fire('escape_lava', escapeLava)
      return
    }
    if (now > waterCooldownUntil && headUnderWater(bot) && !(bot.pathfinder && bot.pathfinder.isMoving())) {
      fire('escape_water', escapeWater)
      return
    }
    if (now - lastDamageAt < 3000) {
      const h = nearestHostile(bot, 4)
      if (h) { lastDamageAt = 0; fire('defend', () => defend(h)); return }
    }
    if (bot.food <= 14 && now > eatCooldownUntil && (!runner.name || bot.food <= 6) && eatSkill.bestFood(bot)) {
      fire('eat', eat)
      return
    }
    if (stuckCheck()) fire('unstuck', unstuck)
  }

  const timer = setInterval(() => { try { tick() } catch (e) { console.error('[sidecar] reflex tick:', e) } }, 500)
  const onHealth = () => setImmediate(() => { try { tick() } catch (e) {} })
  bot.on('health', onHealth)

  return {
    noteDamage () { lastDamageAt = Date.now(); onHealth() },
    get active () { return active },
    stop () {
      stopped = true
      clearInterval(timer)
      bot.removeListener('health', onHealth)
      bot.removeListener('goal_updated', onGoal)
    }
  }
}

module.exports = { startReflexes, headUnderWater, onFire, safeSpot }
