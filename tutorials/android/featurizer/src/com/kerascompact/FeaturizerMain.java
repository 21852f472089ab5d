package com.kerascompact;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * Command line used by the parity test: arguments are the featurizer's
 * (ngrams skipGrams charMin charMax lowercase maxTokens); each stdin line is one sentence as
 * hexadecimal UTF-8 bytes (so any bytes and newlines travel safely); each output line is
 * {@code id:weight} pairs separated by spaces.
 */
public final class FeaturizerMain {
  public static void main(String[] args) throws Exception {
    TextFeaturizer featurizer = new TextFeaturizer(Integer.parseInt(args[0]), Integer.parseInt(args[1]),
        Integer.parseInt(args[2]), Integer.parseInt(args[3]), Boolean.parseBoolean(args[4]),
        Integer.parseInt(args[5]), null, 1.0f, 1.0f);
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
    StringBuilder out = new StringBuilder();
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      byte[] bytes = new byte[line.length() / 2];
      for (int i = 0; i < bytes.length; i++) {
        bytes[i] = (byte) Integer.parseInt(line.substring(2 * i, 2 * i + 2), 16);
      }
      String sentence = StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPLACE)
          .onUnmappableCharacter(CodingErrorAction.REPLACE)
          .decode(ByteBuffer.wrap(bytes)).toString();
      TextFeaturizer.Features features = featurizer.featurize(sentence);
      for (int i = 0; i < features.ids.length; i++) {
        out.append(i == 0 ? "" : " ").append(features.ids[i]).append(':').append(features.weights[i]);
      }
      out.append('\n');
    }
    System.out.print(out);
  }
}
