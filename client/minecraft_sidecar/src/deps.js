'use strict'
// vec3 and prismarine-chat come with mineflayer; resolve them through mineflayer so the sidecar
// needs no dependency of its own beyond package.json's three.
const path = require('path')
const base = { paths: [path.dirname(require.resolve('mineflayer/package.json'))] }
const { Vec3 } = require(require.resolve('vec3', base))

function loadChat (registry) {
  try {
    return require(require.resolve('prismarine-chat', base))(registry)
  } catch (e) {
    return null
  }
}

module.exports = { Vec3, loadChat }
