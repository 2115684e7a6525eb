import t from 'tap';
import { crc32c } from '@node-rs/crc32';
t.test('crc32c known vector', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')) >>> 0, 0xe3069283);
});
