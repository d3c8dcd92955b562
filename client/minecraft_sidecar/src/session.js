'use strict'
// One bot at a time: connect, world events (spawn, damage, death, health, chat, players, found,
// disconnected), and the mode's helpers (reflexes in play mode, the watcher in watch mode).
const mineflayer = require('mineflayer')
const { pathfinder } = require('mineflayer-pathfinder')
const { loadChat } = require('./deps')
const { entitiesNear, entityName, posObj } = require('./entities')
const { startReflexes } = require('./reflexes')
const { startWatch } = require('./watch')
const { SkillError } = require('./skills/util')

const VALUABLE = ['diamond_ore', 'deepslate_diamond_ore', 'emerald_ore', 'deepslate_emerald_ore', 'gold_ore',
  'deepslate_gold_ore', 'nether_gold_ore', 'iron_ore', 'deepslate_iron_ore', 'ancient_debris']

// Plain text of a chat component given as an object, a JSON string or a string.
function chatText (reason, registry) {
  if (reason === undefined || reason === null) return ''
  let v = reason
  if (typeof v === 'string') {
    try { v = JSON.parse(v) } catch (e) { return v }
  }
  if (typeof v === 'string') return v
  const ChatMessage = registry ? loadChat(registry) : null
  if (ChatMessage) {
    try { return new ChatMessage(v).toString() } catch (e) {}
  }
  const walk = c => typeof c === 'string' ? c : !c ? '' : (c.text || c.translate || '') + (c.extra || []).map(walk).join('') + (c.with ? ' ' + c.with.map(walk).join(' ') : '')
  return walk(v)
}

function errorWords (err, host, port) {
  const code = err && err.code
  if (code === 'ECONNREFUSED') return `I can't reach the server at ${host}:${port}, nothing is listening there`
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `there is no server called ${host}`
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH') return `I can't reach the server at ${host}:${port}`
  if (code === 'ECONNRESET') return 'the server closed the connection'
  return `connecting failed: ${err && err.message ? err.message : err}`
}

function timeout (ms, value) {
  return new Promise(resolve => setTimeout(() => resolve(value), ms))
}

class Session {
  constructor ({ emit, runner }) {
    this.emit = emit
    this.runner = runner
    this.bot = null
    this.mode = null
    this.connecting = false
    this.helpers = [] // things with stop()
    this.timers = []
  }

  // Resolves the connect reply; rejects with a SkillError whose message is the reason.
  async connect (p) {
    if (this.connecting) throw new SkillError('busy: connecting')
    this.connecting = true
    try {
      if (this.bot) await this.close()
      return await this._connect(p)
    } finally {
      this.connecting = false
    }
  }

  async _connect (p) {
    const bot = mineflayer.createBot({
      host: p.host, port: p.port, username: p.username, version: p.version, auth: 'offline',
      logErrors: false, hideErrors: true, respawn: true, checkTimeoutInterval: 60000
    })
    bot.loadPlugin(pathfinder)
    const spawned = await new Promise((resolve) => {
      let kickedWith = null
      const done = (v) => {
        clearTimeout(timer)
        bot.removeListener('spawn', onSpawn)
        bot.removeListener('error', onError)
        bot.removeListener('kicked', onKicked)
        bot.removeListener('end', onEnd)
        resolve(v)
      }
      const onSpawn = () => done({ ok: true })
      const onError = (err) => done({ ok: false, error: errorWords(err, p.host, p.port) })
      const onKicked = (reason) => { kickedWith = chatText(reason, bot.registry) }
      const onEnd = (reason) => done({ ok: false, error: kickedWith ? `the server turned me away: ${kickedWith}` : `the server closed the connection before I spawned${reason && reason !== 'socketClosed' ? ` (${reason})` : ''}` })
      const timer = setTimeout(() => done({ ok: false, error: `the server did not let me in within ${Math.round(p.timeout_ms / 1000)} s` }), p.timeout_ms)
      bot.on('spawn', onSpawn)
      bot.on('error', onError)
      bot.on('kicked', onKicked)
      bot.on('end', onEnd)
    })
    if (!spawned.ok) {
      bot.on('error', () => {})
      try { bot.quit() } catch (e) {}
      try { bot._client.end() } catch (e) {}
      throw new SkillError(spawned.error)
    }
    const spawnedAt = Date.now()
    this.joinsFrom = null
    this.bot = bot
    this.mode = p.mode
    this._wire(bot)
    this.emit('spawn', { position: posObj(bot.entity.position) })
    // Chunks around: wait, but never for ever.
    await Promise.race([bot.waitForChunksToLoad().catch(() => {}), timeout(Math.min(10000, p.timeout_ms))])
    if (this.bot !== bot) throw new SkillError('disconnected while loading the world')
    // Players already online show up as joins during login; report joins from here on.
    this.joinsFrom = Math.max(Date.now(), spawnedAt + 500)
    if (p.mode === 'watch') {
      this.helpers.push(startWatch(bot, { player: p.watch_player, followDistance: p.follow_distance, emit: this.emit }))
    } else if (p.reflexes) {
      this.reflexes = startReflexes(bot, { emit: this.emit, runner: this.runner })
      this.helpers.push(this.reflexes)
    }
    return { username: bot.username, position: posObj(bot.entity.position), game_mode: bot.game.gameMode, version: bot.version }
  }

  _wire (bot) {
    const emit = this.emit
    let lastHealth = bot.health
    let reported = { health: bot.health, food: bot.food }
    let lastSwing = null // {name, at}: who swung near us, for damage sources
    let lastDeathMessage = null
    let kickedWith = null

    bot.on('error', (err) => console.error('[sidecar] bot error:', err && err.message ? err.message : err))
    bot.on('spawn', () => {
      lastHealth = bot.health // a respawn (the first spawn is reported by connect)
      emit('spawn', { position: posObj(bot.entity.position) })
    })
    bot.on('entitySwingArm', (e) => {
      if (e && e.position && bot.entity && (e.username || e.name) && e.position.distanceTo(bot.entity.position) <= 8) lastSwing = { name: entityName(e), at: Date.now() }
    })
    bot.on('health', () => {
      if (typeof bot.health !== 'number') return
      if (bot.health < lastHealth && lastHealth > 0) {
        let source = null
        if (lastSwing && Date.now() - lastSwing.at < 1500) source = lastSwing.name
        else {
          const near = entitiesNear(bot, { maxDistance: 4, filter: e => !!(e.username || e.name) && e.name !== 'item' && e.type !== 'orb' })
          if (near.length) source = entityName(near[0].entity)
        }
        emit('damage', { health: Math.round(bot.health * 10) / 10, amount: Math.round((lastHealth - bot.health) * 10) / 10, source })
        this.lastDamageSource = source
        if (this.reflexes && this.bot === bot) this.reflexes.noteDamage()
      }
      lastHealth = bot.health
      if (Math.abs(bot.health - reported.health) >= 2 || Math.abs(bot.food - reported.food) >= 2) {
        reported = { health: bot.health, food: bot.food }
        emit('health', { health: Math.round(bot.health * 10) / 10, food: bot.food })
      }
    })
    bot._client.on('death_combat_event', (packet) => {
      lastDeathMessage = { text: chatText(packet.message, bot.registry), at: Date.now() }
    })
    bot.on('death', () => {
      this.runner.stop('I died')
      setTimeout(() => {
        let reason = lastDeathMessage && Date.now() - lastDeathMessage.at < 3000 ? lastDeathMessage.text : ''
        if (!reason) reason = this.lastDamageSource ? `killed by ${this.lastDamageSource}` : 'my health ran out'
        emit('death', { reason })
      }, 300)
      // mineflayer asks to respawn at once; ask again if the server missed it.
      setTimeout(() => { if (this.bot === bot && !bot.isAlive) { try { bot.respawn() } catch (e) {} } }, 3000)
    })
    bot.on('chat', (username, message) => {
      if (!username || username === bot.username) return
      emit('chat', { username, message })
    })
    bot.on('playerJoined', (pl) => {
      if (this.joinsFrom && Date.now() > this.joinsFrom && pl.username !== bot.username) emit('player_joined', { username: pl.username })
    })
    bot.on('playerLeft', (pl) => {
      if (pl.username !== bot.username) emit('player_left', { username: pl.username })
    })
    bot.on('kicked', (reason) => { kickedWith = chatText(reason, bot.registry) })
    bot.on('end', (reason) => {
      if (this.bot !== bot) return // closed on purpose
      this._teardown()
      emit('disconnected', { reason: kickedWith ? `kicked: ${kickedWith}` : (reason || 'connection closed') })
    })

    // Valuable blocks within 16, one event per name per 60 s.
    const ids = VALUABLE.map(n => bot.registry.blocksByName[n]).filter(Boolean).map(b => b.id)
    const lastFound = new Map()
    this.timers.push(setInterval(() => {
      if (!bot.entity) return
      try {
        const found = bot.findBlocks({ matching: ids, maxDistance: 16, count: 64 })
        const seen = new Set()
        for (const pos of found) { // sorted nearest first
          const b = bot.blockAt(pos)
          if (!b || seen.has(b.name)) continue
          seen.add(b.name)
          if (Date.now() - (lastFound.get(b.name) || 0) < 60000) continue
          lastFound.set(b.name, Date.now())
          emit('found', { block: b.name, position: { x: pos.x, y: pos.y, z: pos.z } })
        }
      } catch (e) { console.error('[sidecar] found scan:', e.message) }
    }, 3000))
  }

  _teardown () {
    this.runner.stop('I was disconnected')
    for (const h of this.helpers) { try { h.stop() } catch (e) {} }
    for (const t of this.timers) clearInterval(t)
    this.helpers = []
    this.timers = []
    this.reflexes = null
    this.bot = null
    this.mode = null
  }

  // Leaves the server (no disconnected event: it was asked for). Resolves once the socket ended or after 1.5 s.
  async close () {
    const bot = this.bot
    if (!bot) return
    this._teardown()
    const ended = new Promise(resolve => bot.once('end', resolve))
    try { bot.quit() } catch (e) { try { bot._client.end() } catch (e2) {} }
    await Promise.race([ended, timeout(1500)])
  }
}

module.exports = { Session, chatText, VALUABLE }
