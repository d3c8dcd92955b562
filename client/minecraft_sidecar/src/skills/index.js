'use strict'
// Skill registry: name -> {run(bot, args, signal), args (parameter spec), check?(args), watchSafe?}.
// Adding a skill is one file in this folder plus one line here.

const SKILLS = {
  goto: require('./goto'),
  follow: require('./follow'),
  look_at: require('./look_at'),
  collect: require('./collect'),
  dig: require('./dig'),
  place: require('./place'),
  craft: require('./craft'),
  equip: require('./equip'),
  eat: require('./eat'),
  attack_hostile: require('./attack_hostile'),
  flee: require('./flee'),
  say: require('./say')
}

module.exports = { SKILLS }
