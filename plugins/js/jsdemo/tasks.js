// Example weir tasks in JavaScript: greetings, retries, failures, caching and misbehaviour
// (for testing that the host contains a JS guest as it does a Rust one).
//
// The SDK is imported by a relative path into the repository, so that `node --test` works
// without installing anything and the build can follow the same path.
import { task, Fatal, getRunContext, getRunLogger } from '../../../guest-sdk/js/weir/index.js';

/** Greets `name` after a short (timer-based) pause, logging along the way. */
export const greet = task(
  { description: 'Greets someone, after a short pause.', version: '1.0', tags: ['demo'] },
  async function greet({ name = 'world' }) {
    if (typeof name !== 'string') throw new Fatal('`name` must be a string');
    getRunLogger().info(`greeting ${name}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
    console.log(`waited, now greeting ${name}`); // captured as an info line (logPrints)
    return `Hello, ${name}!`;
  },
);

/** `text` in upper case: the JS step of a mixed-language flow. */
export const shout = task(function shout({ text }) {
  // Wrong input is fatal, in the words the Rust SDK uses for it.
  if (text === undefined) throw new Fatal('invalid input for task `shout`: missing field `text`');
  if (typeof text !== 'string') {
    throw new Fatal(`invalid input for task \`shout\`: text: expected a string, found ${JSON.stringify(text)}`);
  }
  return text.toUpperCase();
});

/** Fails retriably on the first two attempts; the default retries let the third succeed. */
export const flaky = task({ retries: 3, retryDelaySeconds: 0 }, function flaky() {
  const { attempt } = getRunContext();
  if (attempt < 3) throw new Error(`attempt ${attempt} failed`);
  return `succeeded on attempt ${attempt}`;
});

/** Always fails with a fatal error: no retry can help. */
export const fatal = task({ retries: 3, retryDelaySeconds: 0 }, function fatal({ reason = 'nothing will fix this' }) {
  throw new Fatal(reason);
});

/** Loops forever without calling the host. */
export const spin = task(function spin() {
  for (;;) {}
});

/** Allocates memory without bound, 1 MiB at a time, writing to every page. */
export const hog = task(function hog() {
  const hoard = [];
  for (;;) hoard.push(new Uint8Array(1 << 20).fill(0xa5));
});

/** Cached by input: the same `x` gives back the first run's `random`. */
export const cached = task({ cachePolicy: 'inputs' }, function cached({ x }) {
  return { value: x, random: Math.random() };
});

/** The run context as the task sees it. */
export const context = task(function context() {
  return getRunContext();
});

/** Logs at every level and prints. */
export const chatter = task(function chatter() {
  const logger = getRunLogger();
  logger.debug('a debug line');
  logger.info('an info line');
  logger.warning('a warning line');
  logger.error('an error line');
  console.log('a printed line');
  return 'done';
});

/** Cached by `key` only, whatever the payload. */
export const keyed = task({ cacheKeyFn: (context, input) => input.key }, function keyed({ key, payload }) {
  return { key, payload, nonce: Math.random() };
});
