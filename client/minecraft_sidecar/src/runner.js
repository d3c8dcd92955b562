'use strict'
// Runs one skill at a time, bounded by its timeout, stoppable; reports skill_started/skill_done.
const { validate, clip } = require('./protocol')
const { SKILLS } = require('./skills')
const { SkillError, abortable, stopMoving } = require('./skills/util')

function seconds (ms) {
  const s = ms / 1000
  return `${Number.isInteger(s) ? s : Math.round(s * 10) / 10} s`
}

function speakable (err) {
  if (err instanceof SkillError) return err.message
  const msg = err && err.message ? err.message : String(err)
  return `something went wrong: ${clip(msg, 120)}`
}

class SkillRunner {
  // emit(kind, fields) sends an event line.
  constructor (emit) {
    this.emit = emit
    this.current = null // {name, args, controller, bot}
  }

  get name () {
    return this.current ? this.current.name : null
  }

  // Checks a request; returns {error} or {skill, args}.
  prepare (name, rawArgs, mode) {
    const skill = Object.prototype.hasOwnProperty.call(SKILLS, name) ? SKILLS[name] : null
    if (!skill) return { error: `unknown skill "${name}" (known: ${Object.keys(SKILLS).join(', ')})` }
    if (mode === 'watch' && !skill.watchSafe) return { error: 'watch mode never acts' }
    const v = validate(skill.args, rawArgs, { where: name })
    if (!v.ok) return { error: v.error }
    if (skill.check) {
      const err = skill.check(v.value)
      if (err) return { error: err }
    }
    return { skill, args: v.value }
  }

  // Resolves {ok: true, detail} or {ok: false, error}; never rejects.
  async run (bot, name, rawArgs, timeoutMs, mode) {
    if (this.current) return { ok: false, error: `busy: ${this.current.name}` }
    const prep = this.prepare(name, rawArgs, mode)
    if (prep.error) return { ok: false, error: prep.error }
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(new SkillError(`timed out after ${seconds(timeoutMs)}`)), timeoutMs)
    const me = { name, args: prep.args, controller, bot }
    this.current = me
    this.emit('skill_started', { name, args: prep.args })
    let result
    try {
      const p = Promise.resolve().then(() => prep.skill.run(bot, prep.args, controller.signal))
      p.catch(() => {}) // it may settle after an abort; nothing listens then
      const r = await abortable(p, controller.signal)
      result = { ok: true, detail: (r && r.detail) || 'done' }
    } catch (err) {
      if (!(err instanceof SkillError)) console.error(`[sidecar] skill ${name} error:`, err && err.stack ? err.stack : err)
      result = { ok: false, error: speakable(err) }
    } finally {
      clearTimeout(timer)
      if (this.current === me) this.current = null
      stopMoving(bot)
    }
    const done = { name, ok: result.ok }
    if (result.ok) done.detail = result.detail
    else done.error = result.error
    this.emit('skill_done', done)
    return result
  }

  // Aborts the running skill with `reason`; returns its name or null.
  stop (reason = 'stopped') {
    const cur = this.current
    if (!cur) return null
    cur.controller.abort(new SkillError(reason))
    stopMoving(cur.bot)
    return cur.name
  }
}

module.exports = { SkillRunner, seconds, speakable }
