// Helpers the kafkajs scripts share: failing with a message, sleeping, and waiting for a
// condition with a deadline.
'use strict'

function fail(msg) {
  console.error('FAIL: ' + msg)
  process.exit(1)
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms))
}

// Polls `check` every 50 ms until it holds; fails the script after `deadlineMs`.
async function until(what, check, deadlineMs) {
  const deadline = Date.now() + deadlineMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

module.exports = { fail, sleep, until }
