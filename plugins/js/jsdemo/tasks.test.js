// Native unit tests: the SDK loads under plain node, where there is no host.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { greet, shout, flaky, cached, context } from './tasks.js';
import { Fatal, task, __plugin } from '../../../guest-sdk/js/weir/index.js';

test('tasks are plain functions', async () => {
  assert.equal(await greet({ name: 'Ada' }), 'Hello, Ada!');
  assert.equal(shout({ text: 'quiet' }), 'QUIET');
  assert.throws(() => shout({ text: 3 }), Fatal);
  assert.equal(cached({ x: 2 }).value, 2);
});

test('natively the context is a stand-in first attempt', () => {
  assert.equal(context().taskRunId, 'native');
  assert.equal(context().attempt, 1);
  assert.throws(() => flaky(), /attempt 1 failed/);
});

test('the plugin interface runs tasks by name on JSON text', async () => {
  const names = __plugin.info().map((info) => info.name);
  assert.deepEqual(names, ['greet', 'shout', 'flaky', 'fatal', 'spin', 'hog', 'cached', 'context', 'chatter', 'keyed']);
  const flakyInfo = __plugin.info().find((info) => info.name === 'flaky');
  assert.equal(flakyInfo.retries, 3);
  assert.deepEqual(flakyInfo.retryDelaysMs, [0n]);

  assert.deepEqual(await __plugin.run('shout', '{"text": "hi"}'), { tag: 'ok', val: '"HI"' });
  assert.deepEqual(await __plugin.run('fatal', 'null'), {
    tag: 'err',
    val: { tag: 'fatal', val: 'nothing will fix this' },
  });
  assert.deepEqual(await __plugin.run('flaky', '{}'), {
    tag: 'err',
    val: { tag: 'retriable', val: 'Error: attempt 1 failed' },
  });
  assert.deepEqual(await __plugin.run('shout', '[1]'), {
    tag: 'err',
    val: {
      tag: 'fatal',
      val: 'invalid input for task `shout`: expected a JSON object with one field per parameter, found an array',
    },
  });
  const unknown = await __plugin.run('nope', '{}');
  assert.equal(unknown.val.tag, 'fatal');
  assert.match(unknown.val.val, /^this plugin has no task `nope`; its tasks are `greet`, `shout`/);
});

test('a wrong option is an error when the task is registered', () => {
  assert.throws(() => task({ retrys: 3 }, function typo() {}), /unknown option `retrys`/);
  assert.throws(() => task({ timeoutSeconds: '30s' }, function late() {}), /`timeoutSeconds` must be a number of seconds/);
  assert.throws(() => task(async () => {}), /the function has no name/);
});
