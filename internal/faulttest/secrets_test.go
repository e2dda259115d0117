package faulttest

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

const module = "github.com/wxpay-events/wxpay-events"

// The receiver cannot decrypt: nothing in its import graph is internal/decrypt.
func TestReceiverCannotDecrypt(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the import graph is read with go list: %v", err)
	}
	roots := []string{module + "/cmd/receiver", module + "/internal/receiver", module + "/cmd/consumer"}
	out, err := exec.Command(gobin, append([]string{"list", "-f", `{{.ImportPath}}:{{join .Deps ","}}`}, roots...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, list, _ := strings.Cut(line, ":")
		deps[pkg] = strings.Split(list, ",")
	}
	decrypt := module + "/internal/decrypt"
	for _, root := range roots {
		has := contains2(deps[root], decrypt)
		want := strings.HasSuffix(root, "/consumer") // the consumer must, or this check proves nothing
		if has != want {
			t.Errorf("%s imports %s: %v, want %v", root, decrypt, has, want)
		}
	}
}

func contains2(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The real programs, run as processes at debug level, never write the APIv3 key, private keys, decrypted
// payloads, bodies or signatures to their logs, metrics or dead-letter headers; and the receiver runs
// without any decryption key configured.
func TestSecretsNeverLeak(t *testing.T) {
	bin := programs(t)
	p := pipelinetest.StartWith(t, pipelinetest.Options{NoReceiver: true})
	renv := p.ReceiverEnv()
	if _, ok := renv["WECHATPAY_APIV3_KEY_FILE"]; ok {
		t.Fatal("the receiver's environment has WECHATPAY_APIV3_KEY_FILE")
	}
	for k, v := range renv {
		if strings.Contains(v, "apiv3") {
			t.Fatalf("the receiver's environment points at the APIv3 key: %s=%s", k, v)
		}
	}
	renv["LOG_LEVEL"] = "debug"
	recv := pipelinetest.StartProcess(t, "receiver", filepath.Join(bin, "receiver"), nil, renv)
	started := recv.WaitLog(30*time.Second, "receiver listening")
	url := fmt.Sprintf("http://%s/notify/%s", started["addr"], pipelinetest.MchID)
	recvAdmin := fmt.Sprintf("http://%s", started["admin_addr"])
	if resp, err := http.Get(recvAdmin + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("receiver without a decryption key is not ready: %v %v", err, resp)
	}

	cenv := map[string]string{}
	for k, v := range p.Env {
		cenv[k] = v
	}
	cenv["LOG_LEVEL"] = "debug"
	cons := pipelinetest.StartProcess(t, "consumer", filepath.Join(bin, "consumer"), nil, cenv)
	consAdmin := fmt.Sprintf("http://%s", cons.WaitLog(30*time.Second, "consumer started")["admin_addr"])

	canary := "CANARY" + hex.EncodeToString([]byte(wechatsim.NewUUID()))[:24]
	a := audit.New(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := newLoad(t, p.Pipeline, a).run
	var plaintexts, bodies, signatures []string
	send := func(n wechatsim.Notification, fact audit.Fact, valid bool, want int) {
		t.Helper()
		a.Expect(n.ID, fact, valid)
		if code := a.Post(ctx, url, n); code != want {
			t.Errorf("notification %s: %d, want %d", n.ID, code, want)
		}
		bodies = append(bodies, string(n.Body))
		signatures = append(signatures, n.Header.Get("Wechatpay-Signature"))
	}
	withCanary := func(plain []byte) []byte {
		var m map[string]any
		_ = json.Unmarshal(plain, &m)
		m["attach"] = canary + "-attach"
		m["payer"] = map[string]any{"openid": canary + "-openid"}
		out, _ := json.Marshal(m)
		return out
	}
	for i := 0; i < 4; i++ {
		eventType, plain := factPlaintext(run, i)
		plain = withCanary(plain)
		fact, _ := audit.FactOf(eventType, plain)
		send(p.Build(eventType, plain, wechatsim.Options{}), fact, true, http.StatusNoContent)
		plaintexts = append(plaintexts, string(plain))
	}
	// Dead-letter paths, each with the canary in its plaintext: undecryptable (another APIv3 key), malformed
	// plaintext, unsupported event type.
	other, err := wechatsim.NewPlatform(pipelinetest.MchID)
	if err != nil {
		t.Fatal(err)
	}
	_, plain := factPlaintext(run, 10)
	wrongKey, _ := other.Build("TRANSACTION.SUCCESS", withCanary(plain), wechatsim.Options{})
	wrongKey.Header, _ = p.Platform.Sign(wrongKey.Body, time.Now(), wechatsim.SignWithPublicKeyID, false)
	send(wrongKey, "", true, http.StatusNoContent)
	malformed := []byte(`{"transaction_id":4200000001,"attach":"` + canary + `-malformed","payer":{"openid":"` + canary + `-openid"}}`)
	send(p.Build("TRANSACTION.SUCCESS", malformed, wechatsim.Options{}), "", true, http.StatusNoContent)
	unsupported := withCanary([]byte(`{"out_contract_code":"c1"}`))
	send(p.Build("PAYSCORE.USER_OPEN_SERVICE", unsupported, wechatsim.Options{}), "", true, http.StatusNoContent)
	plaintexts = append(plaintexts, string(malformed), string(unsupported))
	// Rejected ones.
	bad := p.Build("TRANSACTION.SUCCESS", withCanary(plain), wechatsim.Options{})
	bad.Header.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString([]byte(canary+strings.Repeat("x", 200))))
	send(bad, "", false, http.StatusUnauthorized)
	send(p.Build("TRANSACTION.SUCCESS", withCanary(plain), wechatsim.Options{Probe: true}), "", false, http.StatusUnauthorized)

	r := settle(t, p.Pipeline, a, time.Minute, func() string { return recv.Output() + cons.Output() })
	if r.Events != 4 || r.DLQ != 3 {
		t.Errorf("%d events and %d DLQ entries, want 4 and 3", r.Events, r.DLQ)
	}

	var dlqHeaders strings.Builder
	for _, m := range p.Messages(topology.DLQStream) {
		for k, vs := range m.Header {
			fmt.Fprintf(&dlqHeaders, "%s: %s\n", k, strings.Join(vs, ","))
		}
	}
	places := map[string]string{
		"receiver log":     recv.Output(),
		"consumer log":     cons.Output(),
		"receiver metrics": scrape(t, recvAdmin),
		"consumer metrics": scrape(t, consAdmin),
		"DLQ headers":      dlqHeaders.String(),
	}
	secrets := map[string]string{
		"the canary in decrypted payloads": canary,
		"the APIv3 key":                    string(p.Platform.APIv3Key),
		"the APIv3 key in base64":          base64.StdEncoding.EncodeToString(p.Platform.APIv3Key),
		"the APIv3 key in hex":             hex.EncodeToString(p.Platform.APIv3Key),
		"the other APIv3 key":              string(other.APIv3Key),
		"a private key":                    "PRIVATE KEY",
	}
	for i, line := range strings.Split(string(p.Platform.PrivatePEM), "\n") {
		if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			secrets[fmt.Sprintf("line %d of the platform private key", i)] = line
		}
	}
	for i, s := range plaintexts {
		secrets[fmt.Sprintf("plaintext %d", i)] = s
	}
	for i, s := range bodies {
		secrets[fmt.Sprintf("body %d", i)] = s
		var env struct{ Resource struct{ Ciphertext string } }
		if json.Unmarshal([]byte(s), &env) == nil && len(env.Resource.Ciphertext) > 16 {
			secrets[fmt.Sprintf("ciphertext of body %d", i)] = env.Resource.Ciphertext[:16]
		}
	}
	for i, s := range signatures {
		if len(s) > 24 {
			secrets[fmt.Sprintf("signature %d", i)] = s[4:24]
		}
	}
	for place, text := range places {
		if len(text) == 0 {
			t.Errorf("%s is empty: nothing was checked", place)
		}
		for what, secret := range secrets {
			if place == "DLQ headers" && strings.HasPrefix(what, "signature") {
				continue // the DLQ keeps the Wechatpay-* headers as received, by contract
			}
			if strings.Contains(text, secret) {
				t.Errorf("%s contains %s", place, what)
			}
		}
	}
	t.Logf("checked %d secrets in %s (%d, %d, %d, %d, %d bytes)", len(secrets), "receiver and consumer logs, metrics and DLQ headers",
		len(places["receiver log"]), len(places["consumer log"]), len(places["receiver metrics"]), len(places["consumer metrics"]), len(places["DLQ headers"]))
}
