'use strict'
const { fail } = require('./util')

const args = {
  text: { type: 'string', required: true }
}

async function run (bot, a) {
  let text = a.text.replace(/[\r\n\t]+/g, ' ').trim()
  if (!text) fail('there is nothing to say')
  if (text.startsWith('/')) fail("I don't send commands, only chat")
  if (text.length > 256) text = text.slice(0, 256)
  bot.chat(text)
  return { detail: `said "${text}"` }
}

module.exports = { args, run, watchSafe: true }
